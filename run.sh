#!/usr/bin/env bash
# CvT-style launcher: runs `ecvit train` or `ecvit validate` under torchrun, one process per
# GPU (or per CPU worker with the gloo backend), on one machine or several.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash run.sh -g N -t train|test --cfg FILE [options] [KEY VALUE ...]

Launch `ecvit train` (-t train) or `ecvit validate` (-t test) through
`python -m torch.distributed.run` with N processes on this machine.

  -g, --gpus N          processes on this machine, one per GPU            (default: 1)
  -t, --job-type TYPE   train | test (--type is the same)                 (default: train)
  --cfg FILE            YAML experiment (ours, or a microsoft/CvT file as published),
                        e.g. experiments/imagenet/cvt/cvt-13-224x224.yaml
  -p, --port PORT       rendezvous port on the master machine
                        (default: a free port on one machine, 29500 on several)
  -i, --install-deps    first install this project and its requirements (pip install -e)
  --nnodes N            machines taking part                              (default: 1)
  --node_rank R         this machine's rank, 0 .. N-1                     (default: 0)
  --master_addr ADDR    address of the rank-0 machine                     (default: 127.0.0.1)
  -h, --help            show this text

KEY VALUE ...           config overrides applied last, e.g. TRAIN.LR 0.1 OUTPUT_DIR out/x;
                        -t test evaluates TEST.MODEL_FILE (default: OUTPUT_DIR/model_best.pth)

Examples:
  bash run.sh -g 8 -t train --cfg experiments/imagenet/cvt/cvt-13-224x224.yaml
  bash run.sh -g 8 -t test --cfg experiments/imagenet/cvt/cvt-13-224x224.yaml \
      TEST.MODEL_FILE output/imagenet/cvt-13-224x224/model_best.pth
  # two machines with 8 GPUs each (run on both, node_rank 0 on the master):
  bash run.sh -g 8 --nnodes 2 --node_rank 0 --master_addr 10.0.0.1 -p 29500 \
      -t train --cfg experiments/imagenet/cvt/cvt-21-224x224.yaml

Environment: PYTHON selects the interpreter (default: python).
Exit status: 2 for a usage error here or in the config, else that of the run.
EOF
}

die() {
  echo "run.sh: error: $1 (see bash run.sh --help)" >&2
  exit 2
}

need_value() {  # option, number of remaining args
  [ "$2" -ge 2 ] || die "$1 needs a value"
}

is_int() {
  [[ "$1" =~ ^[0-9]+$ ]]
}

gpus=1
type=train
cfg=""
port=""
nnodes=1
node_rank=0
master_addr=127.0.0.1
install_deps=false

while [ $# -gt 0 ]; do
  case "$1" in
    -g|--gpus) need_value "$1" $#; gpus=$2; shift 2 ;;
    -t|--type|--job-type) need_value "$1" $#; type=$2; shift 2 ;;
    -i|--install-deps) install_deps=true; shift ;;
    --cfg) need_value "$1" $#; cfg=$2; shift 2 ;;
    -p|--port) need_value "$1" $#; port=$2; shift 2 ;;
    --nnodes) need_value "$1" $#; nnodes=$2; shift 2 ;;
    --node_rank|--node-rank) need_value "$1" $#; node_rank=$2; shift 2 ;;
    --master_addr|--master-addr) need_value "$1" $#; master_addr=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done

is_int "$gpus" && [ "$gpus" -ge 1 ] || die "-g must be a positive integer, got '$gpus'"
is_int "$nnodes" && [ "$nnodes" -ge 1 ] || die "--nnodes must be a positive integer, got '$nnodes'"
is_int "$node_rank" && [ "$node_rank" -lt "$nnodes" ] \
  || die "--node_rank must be an integer in 0..$((nnodes - 1)), got '$node_rank'"
[ -z "$port" ] || { is_int "$port" && [ "$port" -ge 1 ] && [ "$port" -le 65535 ]; } \
  || die "-p must be a port number, got '$port'"
[ -n "$cfg" ] || die "--cfg FILE is required"
[ -f "$cfg" ] || die "config file not found: $cfg"
case "$type" in
  train) command=train ;;
  test) command=validate ;;
  *) die "-t must be train or test, got '$type'" ;;
esac
[ $(( $# % 2 )) -eq 0 ] || die "overrides come in KEY VALUE pairs; '${!#}' has no value"

if $install_deps; then  # the official -i: the requirements, here the project's own
  "${PYTHON:-python}" -m pip install -q -e "$(cd "$(dirname "$0")" && pwd)" || exit $?
fi

launcher=(--nproc_per_node "$gpus")
if [ "$nnodes" -eq 1 ] && [ -z "$port" ]; then
  launcher+=(--standalone)
else
  launcher+=(--nnodes "$nnodes" --node_rank "$node_rank" --master_addr "$master_addr"
             --master_port "${port:-29500}")
fi

# The preflight in one plain process first (config, device, precision, model, data, output
# directory), so a mistake is one line and exit 2 instead of a failure report from every
# rank; its plan (the "# " lines of --dry-run) is shown before the launch.
plan=$("${PYTHON:-python}" -m ecvit "$command" --cfg "$cfg" --dry-run "$@") || exit $?
grep '^# ' <<<"$plan" || true

exec "${PYTHON:-python}" -m torch.distributed.run "${launcher[@]}" \
  -m ecvit "$command" --cfg "$cfg" "$@"
