"""Media: what a source video holds, cutting it into pieces, joining segments, its audio.

PyAV and ffmpeg only, no Airflow and no storage: these modules take and give local files, so
they run (and are tested) on their own. ``probe`` reads a source exactly; ``chunks`` plans where
chunks begin and end; ``cutting`` writes each chunk's piece; ``joining`` writes and checks the
result; ``audio`` carries the sound; ``sample`` makes the demo's video.
"""
