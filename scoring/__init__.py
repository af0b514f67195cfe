"""Fast neural style transfer for frames: plain PyTorch, no Airflow."""
