"""Model families from your own code: put a module here and name it as ``family: families.<module>:<Class>``.

This folder is a dependency of the train and evaluate stages in ``dvc.yaml``, so editing a family
here retrains and rescores the models that use it.
"""
