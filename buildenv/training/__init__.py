"""What runs inside the training process: the runner (`python -m buildenv.training.runner`),
the `ctx` handed to `train(ctx)` (`context`), what a fitted model is made of (`introspect`),
scoring on the evaluation rows (`scoring`), the MLflow signature and the ONNX conversion
with its parity check. The build orchestrator (`compile/`) starts it and judges its result."""
