"""What MLflow runs to build a logged tinygpt pyfunc model when it is loaded ("models from code": the
model is this file plus its model_config, code and artifacts, so loading unpickles nothing)."""
import mlflow

from tinygpt.pipeline.registry import TinyGptModel

mlflow.models.set_model(TinyGptModel())
