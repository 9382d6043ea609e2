#!/usr/bin/env bash
# First start of the postgres:18 containers (docker-entrypoint-initdb.d): apply the
# same postgres_init/ SQL as the embedded stack, through the same script. The image's
# entrypoint sources *.sh files that are not executable, so apply.sh is started as
# its own bash process either way. CINEMA_POSTGRES_SIDE says which server this is.
bash /opt/cinema/postgres_init/apply.sh "${CINEMA_POSTGRES_SIDE:?set CINEMA_POSTGRES_SIDE to publisher or subscriber}"
