#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/vfs.h>
#include "cfilesync.h"

int postduif_start_writeback(int fd) {
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

int postduif_write_out(int fd) {
    int result;
    do {
        result = sync_file_range(fd, 0, 0,
            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    } while (result != 0 && errno == EINTR);
    return result;
}

long long postduif_file_system_type(int fd) {
    struct statfs system;
    if (fstatfs(fd, &system) != 0) return -1;
    return (long long)system.f_type;
}
