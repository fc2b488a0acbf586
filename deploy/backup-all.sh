#!/bin/sh
# Compatibility shim for the seed's manual trigger:
#   docker exec schedgen-backup /usr/local/bin/backup-all.sh
# runs one verified backup now (same exit codes as `stackback run`).
exec stackback run "$@"
