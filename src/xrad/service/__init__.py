"""The FastAPI scoring service (see :mod:`xrad.service.app`)."""
