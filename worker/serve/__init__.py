"""``python worker/main.py serve``: the HTTP trigger (:mod:`worker.serve.app`) and the passes it runs
(:mod:`worker.serve.runner`). Above the pass, which knows nothing of HTTP."""
