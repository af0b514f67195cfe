"""The Videos page: a view by video of the ledger inside Airflow's UI, uploads straight to storage
and re-styling through Airflow's own API (docs/videos-page.md). ``app`` is what the plugin mounts;
``catalog`` reads the ledger; ``static`` holds the page (plain HTML and JavaScript, no build step)."""
