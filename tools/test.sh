#!/usr/bin/env bash
# `make test`: ruff, mypy, then one pytest run over the unit tests and every rostest file
# (test/test_rostest.py runs each test/rostest/*.test with its own master). Run after
# `source build/env.sh` (the Makefile does both).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
echo "== ruff"; ruff check . --output-format concise || status=1
echo "== mypy"; mypy || status=1
echo "== pytest (unit, the install space, rostest)"
# Two workers (-n 2); a test file's tests stay on one worker (--dist loadfile), so the models
# test/unit/trained.py trains are shared within the file; each rostest and process test brings
# its own master on a free port.
python -m pytest test/unit test/test_install_space.py test/test_rostest.py -q -p no:cacheprovider \
  -n 2 --dist loadfile --durations=20 "$@"; rc=$?
[ $rc -ne 0 ] && status=$rc
[ $status -ne 0 ] && echo "make test: FAILED (ruff, mypy or pytest above)"
exit $status
