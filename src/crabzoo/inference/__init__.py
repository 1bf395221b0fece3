"""Running a trained model on a user's own files.

:func:`~crabzoo.inference.loading.load_trained` rebuilds a paradigm from a checkpoint (or a recipe) and loads
its weights; :class:`~crabzoo.inference.session.Answerer` turns prompts and media files into samples the
paradigm's own processor builds, and generates (batched, or streamed piece by piece). ``crabzoo ask`` and
``crabzoo chat`` are the command-line front ends. Importing this package imports neither torch nor Lightning.
"""
