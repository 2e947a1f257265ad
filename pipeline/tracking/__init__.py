"""All MLflow conventions of seqlab, one module per job; stages never import MLflow themselves.

- ``store``: where runs go (tracking URI, artifact root, experiment), a quiet MLflow;
- ``runs``: one run per trained model, its tags, and the :class:`~pipeline.tracking.runs.Run`
  a stage logs through;
- ``requirements``: the pinned requirements every logged model declares;
- ``keras_model``: a Keras network as an MLflow model, registered as a new version;
- ``pyfunc``: the text-generator pyfunc that MLflow serves;
- ``registry``: version names, metrics on versions, the promotion gate;
- ``registration``: registering a trained model (the evaluate stage: training never registers).
"""
