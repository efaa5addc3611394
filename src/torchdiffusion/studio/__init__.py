"""The studio: a local web page over the run folders (``torchdiffusion studio RUNS``), a thin shell over the
command line's commands. app.py the FastAPI application, jobs.py the one worker and its live previews, params.py
request parameters checked by the CLI's parsers, security.py paths, tokens and uploads, runs.py what the page
shows of a run folder, training.py trainings started from the page, check.py the ``--check`` round trip.
Needs the ``studio`` extra (fastapi, uvicorn); imported only by ``torchdiffusion studio``."""
