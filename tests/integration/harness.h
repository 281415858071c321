/* Integration-test harness: runs the real `tessera` executable (path in $TESSERA_EXE, set by
 * meson) as child processes, captures their output, starts schedulers and workers on
 * 127.0.0.1 port 0 and reads back the port they print, and reaps every child. Also the
 * independent references the tests compare against: SPEC §2's random formula written out
 * again here, and a minimal .npy reader that does not use Tessera's. */
#ifndef TSR_TEST_HARNESS_H
#define TSR_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct proc_result {
    int status; /* exit status, or 128+signal */
    char *out;  /* captured stdout (malloc'd, NUL-terminated) */
    char *err;  /* captured stderr */
} proc_result;

const char *tessera_exe(void);
/* A fresh temporary directory (malloc'd path). */
char *make_tmpdir(void);
/* Removes a temporary directory made by make_tmpdir and everything in it; frees dir. */
void remove_tmpdir(char *dir);
/* Writes text to dir/name. */
void write_file(const char *dir, const char *name, const char *text);
/* Runs argv (argv[0] is replaced by the tessera executable when it is "tessera") in cwd,
 * waiting at most timeout_s; a child still running then is killed and the test fails. */
proc_result run_cmd(const char *cwd, const char *const *argv, int timeout_s);
void proc_result_free(proc_result *r);

/* Starts `tessera scheduler --listen 127.0.0.1:0`; fills addr. */
pid_t start_scheduler(char *addr, size_t size);
/* The same with more arguments (a NULL-terminated list, or NULL). */
pid_t start_scheduler_with(char *addr, size_t size, const char *const *extra);
/* Starts `tessera worker --scheduler addr --threads T --name NAME` (extra args may be NULL). */
pid_t start_worker(const char *addr, int threads, const char *name, const char *cpus);
/* The same with more arguments (a NULL-terminated list, or NULL). */
pid_t start_worker_with(const char *addr, int threads, const char *name, const char *const *extra);
/* SIGTERM, then wait (SIGKILL after 5 s). Returns the exit status. */
int stop_proc(pid_t pid);
/* Server processes a test started and has not reaped: a failed assertion ends the test at once,
 * and proc_reap_tracked (a Criterion .fini hook) then resumes, kills and reaps them, so none
 * outlives the test. proc_track returns pid; at most 64 at once. */
pid_t proc_track(pid_t pid);
void proc_untrack(pid_t pid);
void proc_reap_tracked(void);
/* Waits at most timeout_s for pid to exit: its exit status or 128 + the signal that ended it
 * (and it is untracked), or -1 if it still runs. */
int proc_wait_exit(pid_t pid, double timeout_s);
/* Starts argv (argv[0] "tessera" is the tessera executable) with its stdout on a pipe, whose
 * read end goes to *out_fd; wait_marker reads that until a line holds marker (20 s at most),
 * copying what follows it into out. */
pid_t spawn_reading(const char *const *argv, int *out_fd);
void wait_marker(int fd, const char *marker, char *out, size_t size);

/* SPEC §2, independently. */
double ref_random_f64(uint64_t seed, uint64_t i);
float ref_random_f32(uint64_t seed, uint64_t i);

/* Reads a .npy (<f8 or <f4, C order); returns 0 and a malloc'd buffer of doubles. */
typedef struct npy_data {
    int f32;
    int ndim;
    int64_t shape[8];
    int64_t n;
    double *v;
    char *raw; /* the whole file */
    size_t rawlen;
} npy_data;
int read_npy(const char *path, npy_data *out);
void npy_free(npy_data *d);

/* Does the file exist? */
int file_exists(const char *path);
/* The number of entries in dir other than . and .. */
int dir_entries(const char *dir);

#endif
