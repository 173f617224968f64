/* A slow or full disk for one broker of the fault campaign, injected in the
 * test rather than the broker: preloaded (LD_PRELOAD) into the broker, it
 * wraps the calls that write or sync regular files. Its state is two
 * 32-bit integers in the file POSTDUIF_DISK_FAULTS names, mapped shared,
 * so the campaign changes them while the broker runs (and a restarted
 * broker finds them as they are):
 *
 *   delay in microseconds before each write or sync (0: none)
 *   full: as a full file system answers: a write that needs blocks the
 *         file does not have yet fails with ENOSPC (one within them, as
 *         into space fallocate reserved, succeeds), fallocate fails, and
 *         statvfs says nothing is free
 *
 * Standard output and error are left alone: the broker's log says what
 * happened. With both integers 0 each call costs one load and a compare.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct control {
    volatile int32_t delay_us;
    volatile int32_t full;
};

static struct control *control;

__attribute__((constructor)) static void map_control(void) {
    const char *path = getenv("POSTDUIF_DISK_FAULTS");
    if (!path) return;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    void *mapped = mmap(NULL, sizeof(struct control), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (mapped != MAP_FAILED) control = mapped;
}

/* -1 with errno set when the call must fail; 0 to go on (after any delay).
 * A write of `count` bytes at `offset` (-1: the file's current offset)
 * fails on a full disk unless the file's blocks already hold it; `count`
 * 0 (fallocate) always fails there. */
static int fault(int fd, int writes, off_t offset, size_t count) {
    if (!control) return 0;
    int32_t delay = control->delay_us, full = control->full;
    if (!delay && !full) return 0;
    if (fd <= 2) return 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    if (delay > 0) {
        struct timespec pause = {delay / 1000000, (long)(delay % 1000000) * 1000};
        nanosleep(&pause, NULL);
    }
    if (full && writes) {
        if (offset < 0) offset = lseek(fd, 0, SEEK_CUR);
        if (count > 0 && offset >= 0 && offset + (off_t)count <= (off_t)st.st_blocks * 512) return 0;
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

static size_t total(const struct iovec *iov, int count) {
    size_t sum = 0;
    for (int i = 0; i < count; i++) sum += iov[i].iov_len;
    return sum;
}

#define REAL(name) static __typeof__(name) *real; if (!real) real = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buffer, size_t count) {
    REAL(write);
    if (count > 0 && fault(fd, 1, -1, count)) return -1;
    return real(fd, buffer, count);
}

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) {
    REAL(pwrite);
    if (count > 0 && fault(fd, 1, offset, count)) return -1;
    return real(fd, buffer, count, offset);
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off64_t offset) {
    REAL(pwrite64);
    if (count > 0 && fault(fd, 1, offset, count)) return -1;
    return real(fd, buffer, count, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    REAL(writev);
    if (count > 0 && fault(fd, 1, -1, total(iov, count))) return -1;
    return real(fd, iov, count);
}

ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset) {
    REAL(pwritev);
    if (count > 0 && fault(fd, 1, offset, total(iov, count))) return -1;
    return real(fd, iov, count, offset);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int count, off64_t offset) {
    REAL(pwritev64);
    if (count > 0 && fault(fd, 1, offset, total(iov, count))) return -1;
    return real(fd, iov, count, offset);
}

int fallocate(int fd, int mode, off_t offset, off_t length) {
    REAL(fallocate);
    if (fault(fd, 1, offset, 0)) return -1;
    return real(fd, mode, offset, length);
}

int fallocate64(int fd, int mode, off64_t offset, off64_t length) {
    REAL(fallocate64);
    if (fault(fd, 1, offset, 0)) return -1;
    return real(fd, mode, offset, length);
}

int posix_fallocate(int fd, off_t offset, off_t length) {
    REAL(posix_fallocate);
    if (fault(fd, 1, offset, 0)) return errno;
    return real(fd, offset, length);
}

int fsync(int fd) {
    REAL(fsync);
    fault(fd, 0, 0, 0);
    return real(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    fault(fd, 0, 0, 0);
    return real(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t count, unsigned int flags) {
    REAL(sync_file_range);
    fault(fd, 0, 0, 0);
    return real(fd, offset, count, flags);
}

static void nothing_free(struct statvfs *stats) {
    if (control && control->full) {
        stats->f_bfree = 0;
        stats->f_bavail = 0;
    }
}

int statvfs(const char *path, struct statvfs *stats) {
    REAL(statvfs);
    int result = real(path, stats);
    if (result == 0) nothing_free(stats);
    return result;
}

int fstatvfs(int fd, struct statvfs *stats) {
    REAL(fstatvfs);
    int result = real(fd, stats);
    if (result == 0) nothing_free(stats);
    return result;
}
