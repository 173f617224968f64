#ifndef CFILESYNC_H
#define CFILESYNC_H

/// Starts writeback of a file's dirty pages without waiting for it
/// (Linux sync_file_range with SYNC_FILE_RANGE_WRITE). Swift's Glibc module
/// does not export sync_file_range, a GNU extension. Returns 0 or -1 (errno).
int postduif_start_writeback(int fd);

#endif
