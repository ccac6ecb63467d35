# Shared by the mounted benchmarks (scripts/bench-mount, scripts/bench-versus): a
# temporary directory whose mounts and daemons are cleaned up on exit, and the timed
# workloads. Source it; call bench_start first.

# Creates $work and arranges for every mount point in $mounted to be unmounted, every
# PID in $pids to be stopped, and $work removed when the script exits (also on failure
# or Ctrl-C). Only processes the script started are signalled.
bench_start() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/offloadfs-bench.XXXXXX")
    mounted=()
    pids=()
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

bench_cleanup() {
    local status=$?
    set +e
    cd /
    for mountpoint in "${mounted[@]}"; do
        if mountpoint -q "$mountpoint"; then
            case "$(findmnt -no FSTYPE "$mountpoint")" in
                fuse*) fusermount3 -u "$mountpoint" 2>/dev/null || umount -l "$mountpoint" ;;
                *) umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" ;;
            esac
        fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null; fi
        wait "$pid" 2>/dev/null
    done
    rm -rf "$work"
    exit "$status"
}

# bench_copy_source: counts COPY_SOURCE's entries (copy_files) and bytes (copy_bytes),
# makes a tarball of it in $work (copy_tar) for the untar phase, and reads both into the
# page cache, so every system copies and unpacks from memory.
bench_copy_source() {
    copy_files=$(find "$COPY_SOURCE" | wc -l)
    copy_bytes=$(du -sb "$COPY_SOURCE" | cut -f1)
    copy_tar=$work/copy-source.tar
    tar -cf "$copy_tar" -C "$(dirname "$COPY_SOURCE")" "$(basename "$COPY_SOURCE")"
    find "$COPY_SOURCE" -type f -exec cat {} + > /dev/null
    cat "$copy_tar" > /dev/null
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

wait_for_mount() {
    local mountpoint=$1 pid=$2
    for _ in $(seq 400); do
        mountpoint -q "$mountpoint" && return 0
        kill -0 "$pid" 2>/dev/null || { echo "error: the daemon for $mountpoint exited" >&2; return 1; }
        sleep 0.05
    done
    echo "error: $mountpoint did not appear" >&2
    return 1
}

unmount_system() {
    local mountpoint=$1
    case "$(findmnt -no FSTYPE "$mountpoint")" in
        fuse*) fusermount3 -u "$mountpoint" ;;
        *) umount "$mountpoint" ;;
    esac
}

# median "N N N ..." -> the median, rounded (rounds of bench-mount and bench-versus)
median() { python3 -c "import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:]))))" $1; }

# spread "N N N ..." -> "min-max" (bench-mount's and bench-versus's rounds)
spread() { python3 -c "import sys; v = [round(float(x)) for x in sys.argv[1:]]; print(f'{min(v)}-{max(v)}')" $1; }

# fio_metric JSON_FILE read|write bw|iops -> MiB/s or IOPS, rounded
fio_metric() {
    python3 - "$@" <<'EOF'
import json, sys
path, direction, metric = sys.argv[1:4]
job = json.load(open(path))["jobs"][0][direction]
print(round(job["bw"] / 1024) if metric == "bw" else round(job["iops"]))
EOF
}

# metadata DIR COUNT -> "create/s stat/s remove/s"
metadata() {
    python3 - "$@" <<'EOF'
import os, sys, time
directory, count = sys.argv[1], int(sys.argv[2])
os.makedirs(directory)
names = [os.path.join(directory, "f%05d" % i) for i in range(count)]
rates = []
start = time.perf_counter()
for name in names:
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
rates.append(count / (time.perf_counter() - start))
start = time.perf_counter()
for name in names:
    os.stat(name)
rates.append(count / (time.perf_counter() - start))
start = time.perf_counter()
for name in names:
    os.unlink(name)
rates.append(count / (time.perf_counter() - start))
os.rmdir(directory)
print(" ".join(str(round(rate)) for rate in rates))
EOF
}

# parallel_metadata DIR COUNT WORKERS -> "create/s open/s chmod/s rename/s move/s remove/s":
# WORKERS processes, each in a directory of its own under DIR, create COUNT/WORKERS empty
# files, then (each phase after all have done the last) open and close each, chmod each,
# rename each within its directory, move each into a second directory of its own (a
# rename across directories), and unlink them; the rates are of all workers together,
# from a common start to the last one's end. Changes in different directories, and of
# different files, need not wait for each other.
parallel_metadata() {
    python3 - "$@" <<'EOF'
import multiprocessing, os, sys, time
directory, count, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
each = count // workers
def work(index, barrier, times):
    own = os.path.join(directory, "w%d" % index)
    moved = os.path.join(directory, "m%d" % index)
    os.makedirs(own)
    os.makedirs(moved)
    names = [os.path.join(own, "f%05d" % i) for i in range(each)]
    targets = [os.path.join(moved, "f%05d" % i) for i in range(each)]
    barrier.wait()
    start = time.perf_counter()
    for name in names:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    times[6 * index] = time.perf_counter() - start
    barrier.wait()
    start = time.perf_counter()
    for name in names:
        os.close(os.open(name, os.O_RDONLY))
    times[6 * index + 1] = time.perf_counter() - start
    barrier.wait()
    start = time.perf_counter()
    for name in names:
        os.chmod(name, 0o600)
    times[6 * index + 2] = time.perf_counter() - start
    barrier.wait()
    start = time.perf_counter()
    for name in names:
        os.rename(name, name + "r")
    times[6 * index + 3] = time.perf_counter() - start
    barrier.wait()
    start = time.perf_counter()
    for name, target in zip(names, targets):
        os.rename(name + "r", target)
    times[6 * index + 4] = time.perf_counter() - start
    barrier.wait()
    start = time.perf_counter()
    for target in targets:
        os.unlink(target)
    times[6 * index + 5] = time.perf_counter() - start
    os.rmdir(own)
    os.rmdir(moved)
barrier = multiprocessing.Barrier(workers)
times = multiprocessing.Array("d", 6 * workers)
processes = [multiprocessing.Process(target=work, args=(i, barrier, times)) for i in range(workers)]
for process in processes: process.start()
for process in processes: process.join()
if any(process.exitcode != 0 for process in processes): sys.exit(1)
os.rmdir(directory)
total = each * workers
print(" ".join(str(round(total / max(times[phase::6]))) for phase in range(6)))
EOF
}

# The keys bench_workloads fills, in its order. WORKLOADS=metadata keeps only the
# metadata workloads (create/stat/remove, cp -a, tar -x, rm -rf: issue 11's everyday
# rates) and leaves out every fio phase: a round then takes seconds rather than minutes,
# so more rounds fit, and no writeback or punch of a large file runs beside the metadata.
case "${WORKLOADS:-all}" in
    all) bench_keys=(seqwrite seqread randread randwrite randwrite2 create stat remove create2 open2 chmod2 rename2 move2 remove2 copy untar rmrf) ;;
    metadata) bench_keys=(create stat remove create2 open2 chmod2 rename2 move2 remove2 copy untar rmrf) ;;
    *) echo "error: WORKLOADS must be 'all' or 'metadata', not '$WORKLOADS'" >&2; exit 2 ;;
esac

# bench_workloads SYSTEM MOUNTPOINT: the timed workloads on a mounted filesystem, into
# result[SYSTEM,KEY] (the caller declares `declare -A result`): seqwrite, seqread (MiB/s),
# randread, randwrite, randwrite2 (IOPS; two writers), create, stat, remove (files/s),
# create2, open2 (opens and closes), chmod2, rename2 (within each one's directory), move2
# (from each one's directory into a second one of its own),
# remove2 (files/s, two processes in directories of their own), copy, untar,
# rmrf (entries/s) (`bench_keys`). Uses
# SIZE_SEQ, SIZE_RAND, RUNTIME, FILES, COPY_SOURCE, WORKLOADS, and copy_files and copy_tar
# from bench_copy_source.
bench_workloads() {
    local fio_common=(--directory="$2" --output-format=json --ioengine=psync --iodepth=1)

    if [ "${WORKLOADS:-all}" = all ]; then
        echo "   sequential write" >&2
        fio --name=seqwrite "${fio_common[@]}" --rw=write --bs=1M --size="$SIZE_SEQ" --end_fsync=1 \
            --filename=seq > "$work/fio.json"
        result[$1,seqwrite]=$(fio_metric "$work/fio.json" write bw)
        echo "   sequential read" >&2
        drop_caches
        fio --name=seqread "${fio_common[@]}" --rw=read --bs=1M --size="$SIZE_SEQ" --filename=seq > "$work/fio.json"
        result[$1,seqread]=$(fio_metric "$work/fio.json" read bw)
        rm -f "$2/seq"

        echo "   random read" >&2
        # fio lays the file out first (a sequential write); the timed part starts uncached.
        fio --name=layout "${fio_common[@]}" --rw=write --bs=1M --size="$SIZE_RAND" --end_fsync=1 \
            --filename=rand > /dev/null
        drop_caches
        fio --name=randread "${fio_common[@]}" --rw=randread --bs=4k --size="$SIZE_RAND" --runtime="$RUNTIME" \
            --time_based --filename=rand > "$work/fio.json"
        result[$1,randread]=$(fio_metric "$work/fio.json" read iops)
        echo "   random write" >&2
        fio --name=randwrite "${fio_common[@]}" --rw=randwrite --bs=4k --size="$SIZE_RAND" --runtime="$RUNTIME" \
            --time_based --end_fsync=1 --filename=rand > "$work/fio.json"
        result[$1,randwrite]=$(fio_metric "$work/fio.json" write iops)
        rm -f "$2/rand"
    fi

    echo "   metadata ($FILES files)" >&2
    local create stat remove start end
    read -r create stat remove < <(metadata "$2/meta" "$FILES")
    result[$1,create]=$create; result[$1,stat]=$stat; result[$1,remove]=$remove
    echo "   metadata in two directories at once ($FILES files)" >&2
    local opened changed renamed
    read -r create opened changed renamed moved remove < <(parallel_metadata "$2/meta2" "$FILES" 2)
    result[$1,create2]=$create; result[$1,open2]=$opened; result[$1,chmod2]=$changed
    result[$1,rename2]=$renamed; result[$1,move2]=$moved; result[$1,remove2]=$remove

    echo "   cp -a $COPY_SOURCE" >&2
    start=$(date +%s.%N)
    cp -a "$COPY_SOURCE" "$2/copy"
    sync -f "$2/copy"
    end=$(date +%s.%N)
    result[$1,copy]=$(python3 -c "print(round($copy_files / ($end - $start)))")
    rm -rf "$2/copy"

    echo "   untar, rm -rf" >&2
    # The same tree from a tarball in the page cache, then removed: issue 11's untar and
    # rm -rf rates.
    mkdir "$2/untar"
    start=$(date +%s.%N)
    tar -xf "$copy_tar" -C "$2/untar"
    sync -f "$2/untar"
    end=$(date +%s.%N)
    result[$1,untar]=$(python3 -c "print(round($copy_files / ($end - $start)))")
    start=$(date +%s.%N)
    rm -rf "$2/untar"
    sync -f "$2"
    end=$(date +%s.%N)
    result[$1,rmrf]=$(python3 -c "print(round($copy_files / ($end - $start)))")

    [ "${WORKLOADS:-all}" = all ] || return 0
    echo "   random write, two writers" >&2
    # Two jobs, each on a file of its own (fio's default names), as two programs
    # writing at once; group_reporting makes jobs[0] their sum. Last: the space its
    # files free is still being committed and punched for a while afterwards, which
    # made the metadata rows depend on how much this phase wrote.
    fio --name=randwrite2 "${fio_common[@]}" --rw=randwrite --bs=4k --size="$SIZE_RAND" --runtime="$RUNTIME" \
        --time_based --end_fsync=1 --numjobs=2 --group_reporting > "$work/fio.json"
    result[$1,randwrite2]=$(fio_metric "$work/fio.json" write iops)
    rm -f "$2"/randwrite2.*

}
