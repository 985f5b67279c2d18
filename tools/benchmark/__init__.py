"""The loss benchmark (``benchmark_loss.py``) and the library it is made of.

- :mod:`.cases`: the inputs, the compared methods and the loss callables;
- :mod:`.measure`: timing, device synchronisation, bandwidth floor, CPU contention;
- :mod:`.memory`: peak extra memory, in-process (CUDA) or in a worker process (CPU);
- :mod:`.agreement`: float64 reference, agreement checks, accuracy probe;
- :mod:`.train_step`: a RetinaNet training step with each loss;
- :mod:`.report`: result tables, ratios, environment, markdown and JSON.

mmdet and ``mmdet_polyloss`` are imported inside the functions that need them,
so that on CUDA mmcv's focal op can be prepared before mmdet is first imported
(:func:`.cases.prepare_mmdet`).
"""
