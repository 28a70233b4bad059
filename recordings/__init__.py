"""Call recordings tied to work orders (issue 7).

* ``model.py``   — states, safe names from AMI, retention/legal hold, score validation (stdlib only)
* ``access.py``  — who may hear what: pure functions over ``cti.auth.Principal``
* ``audio.py``   — WAV checks (duration, size, SHA-256), compact copy (pydub/ffmpeg, Opus in Ogg), verification
* ``repository.py`` — asyncpg (migration 008: ``recordings``, ``recording_access_log``, ``recording_scores``)
* ``service.py`` — the pipeline handler that indexes MixMonitor files; the durable worker
  (index recovery, transcoding claimed with SKIP LOCKED + lease, retention sweep)
* ``routes.py``  — HTTP API, playback with range requests, audit, quality scores, pages
* ``wiring.py``  — composition helper for ``cti.app``

File system: the CTI reads ``recordings_dir`` (extensions.conf ``RECORDINGS_DIR``).
Transcoding writes compact copies to ``recordings_archive_dir`` (default: beside
the originals) and removes an original once its copy is verified, so the CTI's
user needs write access there (e.g. group ``asterisk`` with mode 2770); without
it the copy is made, the original is kept and ``recording_original_not_removed``
is logged.
"""
