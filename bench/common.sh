# Shared by bench/compare.sh and bench/ab.sh (sourced): the pool every prefork server runs with in
# the benchmarks, and the median of a column of numbers.

# StartServers 8, MinSpareServers 5, MaxSpareServers 20, MaxRequestWorkers 64, keep-alive on,
# MaxKeepAliveRequests 100, KeepAliveTimeout 5 (Apache gets the same in its configuration).
PREFORKD_POOL_FLAGS=(--start-servers 8 --min-spare-servers 5 --max-spare-servers 20 --max-request-workers 64
    --server-limit 64 --keep-alive true --max-keep-alive-requests 100 --keep-alive-timeout 5 --timeout 60)

# Numbers on stdin, one per line -> their median ("nan" for none).
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) {print "nan"} else if (NR % 2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }
