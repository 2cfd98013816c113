"""The DVC pipeline's side: params, output paths, MLflow tracking, the stages' files, report, CLI."""
