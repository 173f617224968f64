#ifndef CFILESYNC_H
#define CFILESYNC_H

/// Starts writeback of a file's dirty pages without waiting for it
/// (Linux sync_file_range with SYNC_FILE_RANGE_WRITE). Swift's Glibc module
/// does not export sync_file_range, a GNU extension. Returns 0 or -1 (errno).
int postduif_start_writeback(int fd);

/// Writes a file's dirty pages and waits until the disk has taken them
/// (sync_file_range with WAIT_BEFORE, WRITE and WAIT_AFTER), through
/// EINTR. Neither the file's metadata nor the disk's volatile cache is
/// flushed. Returns 0 or -1 (errno), a failed writeback included.
int postduif_write_out(int fd);

/// The type of the file system holding an open file (statfs's f_type,
/// such as 0xEF53 for ext2/3/4), or -1 (errno). Swift's Glibc module does
/// not export sys/vfs.h.
long long postduif_file_system_type(int fd);

#endif
