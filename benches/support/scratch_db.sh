# Sourced by the shell benches: `scratch_url BASE NAME` prints BASE's URL
# with its database replaced by NAME, keeping its query (`?host=…`).
scratch_url() {
    local base=$1 name=$2 query="" url
    [[ "$base" == *\?* ]] && query="?${base#*\?}"
    url="${base%%\?*}"
    printf '%s\n' "${url%/*}/$name$query"
}
