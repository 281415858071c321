/* Every class of invalid program is rejected before anything runs: exit status 2, a message
 * naming the file, the array and the problem, and no output file (nor a temporary one) left. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "harness.h"

typedef struct bad_case {
    const char *what;
    const char *json;
    const char *expect[3]; /* substrings of stderr */
} bad_case;

#define HEAD "{\"tessera\": 1, \"arrays\": {"
#define OUT "}, \"outputs\": {\"C\": \"out.npy\"}}"

static const bad_case cases[] = {
    {"syntax",
     "{\"tessera\": 1,\n \"arrays\": {\"C\": {\"op\": \"zeros\" \"shape\": [2]}}}",
     {"prog.json:2:", "syntax"}},
    {"version",
     "{\"tessera\": 2, \"arrays\": {\"C\": {\"op\": \"zeros\", \"shape\": [2]}}, "
     "\"outputs\": {\"C\": \"out.npy\"}}",
     {"prog.json", "version"}},
    {"unknown op",
     HEAD "\"C\": {\"op\": \"frobnicate\", \"args\": []}" OUT,
     {"prog.json", "\"C\"", "frobnicate"}},
    {"unknown array",
     HEAD "\"C\": {\"op\": \"neg\", \"args\": [\"Q\"]}" OUT,
     {"prog.json", "\"C\"", "\"Q\""}},
    {"cycle",
     HEAD "\"A\": {\"op\": \"neg\", \"args\": [\"C\"]}, \"C\": {\"op\": \"neg\", \"args\": "
          "[\"A\"]}" OUT,
     {"prog.json", "cycle", "\"A\""}},
    {"broadcast",
     HEAD "\"A\": {\"op\": \"ones\", \"shape\": [3, 4]}, \"B\": {\"op\": \"ones\", \"shape\": "
          "[5]}, \"C\": {\"op\": \"add\", \"args\": [\"A\", \"B\"]}" OUT,
     {"prog.json", "\"C\"", "broadcast"}},
    {"matmul",
     HEAD "\"A\": {\"op\": \"ones\", \"shape\": [10, 300]}, \"B\": {\"op\": \"ones\", "
          "\"shape\": [200, 7]}, \"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]}" OUT,
     {"prog.json: array \"C\": matmul needs", "300", "200"}},
    {"negative shape",
     HEAD "\"C\": {\"op\": \"zeros\", \"shape\": [3, -4]}" OUT,
     {"prog.json", "\"C\"", "-4"}},
    {"overflowing shape",
     HEAD "\"C\": {\"op\": \"zeros\", \"shape\": [4294967296, 4294967296, 16]}" OUT,
     {"prog.json", "\"C\"", "large"}},
    {"zero chunks",
     HEAD "\"C\": {\"op\": \"zeros\", \"shape\": [4, 4], \"chunks\": 0}" OUT,
     {"prog.json", "\"C\"", "chunk"}},
    {"negative chunks",
     HEAD "\"C\": {\"op\": \"zeros\", \"shape\": [4, 4], \"chunks\": [2, -1]}" OUT,
     {"prog.json", "\"C\"", "chunk"}},
    {"missing npy",
     HEAD "\"C\": {\"op\": \"load\", \"path\": \"nope.npy\"}" OUT,
     {"prog.json", "\"C\"", "nope.npy"}},
    {"malformed npy",
     HEAD "\"C\": {\"op\": \"load\", \"path\": \"bad.npy\"}" OUT,
     {"prog.json", "\"C\"", "bad.npy"}},
    {"print too large",
     "{\"tessera\": 1, \"arrays\": {\"C\": {\"op\": \"zeros\", \"shape\": [2000]}}, "
     "\"outputs\": {\"C\": \"-\"}}",
     {"prog.json", "\"C\"", "print"}},
};

static void check_case(const bad_case *bc, const char *cmd) {
    char *dir = make_tmpdir();
    write_file(dir, "prog.json", bc->json);
    write_file(dir, "bad.npy", "\x93NUMPY garbage");
    const char *argv[] = {"tessera", cmd, "prog.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_assert_eq(r.status, 2, "%s (%s): exit status %d, want 2; stderr:\n%s", bc->what, cmd,
                 r.status, r.err);
    for (int i = 0; i < 3 && bc->expect[i]; i++)
        cr_assert(strstr(r.err, bc->expect[i]), "%s (%s): message lacks \"%s\":\n%s", bc->what, cmd,
                  bc->expect[i], r.err);
    cr_assert_eq(dir_entries(dir), 2, "%s (%s): a file was created", bc->what, cmd);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(badinput, run_rejects_every_class, .timeout = 120) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], "run");
}

Test(badinput, check_rejects_every_class, .timeout = 120) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], "check");
}

Test(badinput, submit_rejects_before_connecting, .timeout = 30) {
    char *dir = make_tmpdir();
    write_file(dir, "prog.json", cases[6].json);
    /* Nothing listens on port 1: a valid program would fail with 1, an invalid one with 2. */
    const char *argv[] = {"tessera", "submit", "--scheduler", "127.0.0.1:1", "prog.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_assert_eq(r.status, 2, "exit %d:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "matmul needs"));
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(badinput, bad_command_lines, .timeout = 30) {
    const char *a1[] = {"tessera", "run", NULL};
    proc_result r = run_cmd(NULL, a1, 10);
    cr_assert_eq(r.status, 2);
    proc_result_free(&r);
    const char *a2[] = {"tessera", "run", "--workers", "zero", "x.json", NULL};
    r = run_cmd(NULL, a2, 10);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "--workers"));
    proc_result_free(&r);
    const char *a3[] = {"tessera", "frob", NULL};
    r = run_cmd(NULL, a3, 10);
    cr_assert_eq(r.status, 2);
    proc_result_free(&r);
    const char *cmds[] = {"run", "submit", "scheduler", "worker", "check"};
    for (int i = 0; i < 5; i++) {
        const char *a4[] = {"tessera", cmds[i], "--help", NULL};
        r = run_cmd(NULL, a4, 10);
        cr_assert_eq(r.status, 0, "%s --help", cmds[i]);
        cr_assert(strstr(r.out, "usage: tessera"), "%s --help prints no usage", cmds[i]);
        proc_result_free(&r);
    }
}

/* GPU options: refused with a message that says what is wrong, before or at start-up. */
Test(badinput, gpu_options, .timeout = 60) {
    char *dir = make_tmpdir();
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"ones\", \"shape\": [4], "
               "\"chunks\": 2}}, \"outputs\": {\"A\": \"-\"}}");
    const char *a1[] = {"tessera", "run", "--workers", "0", "p.json", NULL};
    proc_result r = run_cmd(dir, a1, 20);
    cr_assert_eq(r.status, 2, "no workers at all: %s", r.err);
    cr_assert(strstr(r.err, "--gpus"), "%s", r.err);
    proc_result_free(&r);
    const char *a2[] = {"tessera", "run", "--gpus", "0,x", "p.json", NULL};
    r = run_cmd(dir, a2, 20);
    cr_assert_eq(r.status, 1, "%s", r.err);
    cr_assert(strstr(r.err, "bad GPU list \"0,x\""), "%s", r.err);
    proc_result_free(&r);
    const char *a3[] = {"tessera",   "run",    "--gpus", "0", "--device-memory-limit",
                        "12 apples", "p.json", NULL};
    r = run_cmd(dir, a3, 20);
    cr_assert_eq(r.status, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--device-memory-limit needs a byte count"), "%s", r.err);
    proc_result_free(&r);
    /* No device here (and not the fake one): the GPU worker says so and the start fails. */
    unsetenv("TESSERA_FAKE_GPU");
    const char *a4[] = {"tessera", "run", "--workers", "0", "--gpus", "0", "p.json", NULL};
    r = run_cmd(dir, a4, 60);
    cr_assert_eq(r.status, 1, "%s", r.err);
    cr_assert(strstr(r.err, "GPU 0") && (strstr(r.err, "no cuda device") ||
                                         strstr(r.err, "without CUDA") || strstr(r.err, "cuda")),
              "%s", r.err);
    proc_result_free(&r);
    /* The fake device has one GPU, 0. */
    setenv("TESSERA_FAKE_GPU", "1", 1);
    const char *a5[] = {"tessera", "run", "--workers", "0", "--gpus", "1", "p.json", NULL};
    r = run_cmd(dir, a5, 60);
    unsetenv("TESSERA_FAKE_GPU");
    cr_assert_eq(r.status, 1, "%s", r.err);
    cr_assert(strstr(r.err, "fake device 1 does not exist"), "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

Test(badinput, check_describes_valid_program, .timeout = 30) {
    char *dir = make_tmpdir();
    /* A: 2x2 chunks, B: 2x2 chunks, C = A @ B: 2x2 outputs, each one task of its 2 k-steps
     * (docs/arrays.md: small blocks are grouped) = 4 matmul tasks, and 8 sources. */
    write_file(dir, "ok.json",
               "{\"tessera\": 1, \"arrays\": {"
               "\"A\": {\"op\": \"random\", \"shape\": [4, 4], \"chunks\": 2},"
               "\"B\": {\"op\": \"random\", \"shape\": [4, 6], \"chunks\": [2, 3], "
               "\"dtype\": \"float32\"},"
               "\"C\": {\"op\": \"matmul\", \"args\": [\"A\", \"B\"]}},"
               "\"outputs\": {\"C\": \"c.npy\"}}");
    const char *argv[] = {"tessera", "check", "ok.json", NULL};
    proc_result r = run_cmd(dir, argv, 30);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "C: matmul shape=(4, 6) dtype=float64 chunks=(2, 3)"), "%s", r.out);
    cr_assert(strstr(r.out, "B: random shape=(4, 6) dtype=float32"), "%s", r.out);
    cr_assert(strstr(r.out, "\n12 tasks\n"), "want 12 tasks:\n%s", r.out);
    cr_assert_eq(dir_entries(dir), 1, "check wrote a file");
    proc_result_free(&r);
    const char *argv2[] = {"tessera", "check", "--dot", "ok.json", NULL};
    r = run_cmd(dir, argv2, 30);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "digraph"), "%s", r.out);
    cr_assert(strstr(r.out, "->"), "no edges in the dot output");
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* ---- bad output paths (issue 12, item 9) ---------------------------------------------------- */

/* A 4-element <f8 .npy of 1, 2, 3, 4, written by hand (not by Tessera). */
static void write_input_npy(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    cr_assert(f);
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }");
    int pad = 128 - 10 - n - 1;
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned short hl = (unsigned short)(n + pad + 1);
    fputc(hl & 0xff, f);
    fputc(hl >> 8, f);
    fwrite(hdr, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    double v[4] = {1, 2, 3, 4};
    fwrite(v, sizeof v[0], 4, f);
    fclose(f);
}

static char *slurp(const char *dir, const char *name, size_t *len) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    cr_assert(f, "%s is gone", p);
    char *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

typedef struct path_case {
    const char *what;
    const char *prog; /* written as prog.json (and run from the directory) */
    const char *file; /* the program file named on the command line */
    const char *expect[4];
} path_case;

#define LOADP                                                                                      \
    "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"load\", \"path\": \"a.npy\"}, "               \
    "\"B\": {\"op\": \"neg\", \"args\": [\"A\"]}}, \"outputs\": "

static const path_case path_cases[] = {
    {"output is the load input",
     LOADP "{\"B\": \"a.npy\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "\"a.npy\"", "array \"A\" loads"}},
    {"output is the load input, spelled ./",
     LOADP "{\"B\": \"./a.npy\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "\"./a.npy\"", "array \"A\" loads"}},
    {"output is a symlink to the load input",
     LOADP "{\"B\": \"link.npy\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "link.npy", "array \"A\" loads"}},
    {"output is a hard link to the load input",
     LOADP "{\"B\": \"hard.npy\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "hard.npy", "array \"A\" loads"}},
    {"output is the program file",
     LOADP "{\"B\": \"./prog.json\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "program file"}},
    {"output is the program file, run through a symlink",
     LOADP "{\"B\": \"prog.json\"}}",
     "plink.json",
     {"plink.json", "array \"B\"", "program file"}},
    {"output in a missing directory",
     LOADP "{\"B\": \"nodir/b.npy\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "nodir", "No such file"}},
    {"output under a file",
     LOADP "{\"B\": \"a.npy/b.npy\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "Not a directory"}},
    {"output is a directory",
     LOADP "{\"B\": \"sub\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "\"sub\" is a directory"}},
    {"output is a named pipe",
     LOADP "{\"B\": \"fifo\"}}",
     "prog.json",
     {"prog.json", "array \"B\"", "\"fifo\" is a pipe"}},
    {"two outputs, one file",
     LOADP "{\"B\": \"b.npy\", \"A\": \"sub/../b.npy\"}}",
     "prog.json",
     {"prog.json", "\"B\"", "\"A\"", "both write one file"}},
    {"a store output where a file is",
     LOADP "{\"B\": {\"path\": \"a.npy\"}}}",
     "prog.json",
     {"prog.json", "array \"B\"", "Zarr store"}},
    {"a number too large for JSON",
     "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"full\", \"shape\": [3], \"value\": 1e400}},"
     " \"outputs\": {\"A\": \"-\"}}",
     "prog.json",
     {"prog.json:1:", "array \"A\"", "\"value\"", "out of range"}},
};

/* Every case: exit 2 from run and check, the message, and nothing written or overwritten. */
Test(badinput, bad_output_paths, .timeout = 120) {
    const char *cmds[] = {"check", "run"};
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++) {
        for (int c = 0; c < 2; c++) {
            const path_case *pc = &path_cases[i];
            char *dir = make_tmpdir();
            write_file(dir, "prog.json", pc->prog);
            write_input_npy(dir, "a.npy");
            char a[1100], b[1100];
            snprintf(a, sizeof a, "%s/a.npy", dir);
            snprintf(b, sizeof b, "%s/link.npy", dir);
            cr_assert_eq(symlink("a.npy", b), 0);
            snprintf(b, sizeof b, "%s/hard.npy", dir);
            cr_assert_eq(link(a, b), 0);
            snprintf(b, sizeof b, "%s/plink.json", dir);
            cr_assert_eq(symlink("prog.json", b), 0);
            snprintf(b, sizeof b, "%s/sub", dir);
            cr_assert_eq(mkdir(b, 0755), 0);
            snprintf(b, sizeof b, "%s/fifo", dir);
            cr_assert_eq(mkfifo(b, 0644), 0);
            size_t plen, alen;
            char *prog0 = slurp(dir, "prog.json", &plen), *a0 = slurp(dir, "a.npy", &alen);
            const char *argv[] = {"tessera", cmds[c], pc->file, NULL};
            proc_result r = run_cmd(dir, argv, 60);
            cr_assert_eq(r.status, 2, "%s (%s): exit %d, want 2:\n%s", pc->what, cmds[c], r.status,
                         r.err);
            for (int k = 0; k < 4 && pc->expect[k]; k++)
                cr_assert(strstr(r.err, pc->expect[k]), "%s (%s): message lacks \"%s\":\n%s",
                          pc->what, cmds[c], pc->expect[k], r.err);
            size_t plen1, alen1;
            char *prog1 = slurp(dir, "prog.json", &plen1), *a1 = slurp(dir, "a.npy", &alen1);
            cr_assert(plen1 == plen && !memcmp(prog0, prog1, plen), "%s: program changed",
                      pc->what);
            cr_assert(alen1 == alen && !memcmp(a0, a1, alen), "%s: input changed", pc->what);
            /* prog.json, a.npy, link.npy, hard.npy, plink.json, sub, fifo: nothing else. */
            cr_assert_eq(dir_entries(dir), 7, "%s (%s): a file was created", pc->what, cmds[c]);
            struct stat fst;
            cr_assert(stat(b, &fst) == 0 && S_ISFIFO(fst.st_mode), "%s: the pipe was replaced",
                      pc->what);
            snprintf(b, sizeof b, "%s/sub", dir);
            cr_assert_eq(dir_entries(b), 0, "%s (%s): a file was created in sub", pc->what,
                         cmds[c]);
            free(prog0);
            free(prog1);
            free(a0);
            free(a1);
            proc_result_free(&r);
            remove_tmpdir(dir);
        }
    }
}

/* The same paths that are fine: an output next to its input, a store output replacing an old
 * store, and "-" twice never clash. */
Test(badinput, good_output_paths_run, .timeout = 60) {
    char *dir = make_tmpdir();
    write_input_npy(dir, "a.npy");
    write_file(dir, "prog.json", LOADP "{\"B\": \"./b.npy\", \"A\": \"-\"}}");
    const char *argv[] = {"tessera", "run", "prog.json", NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "A: 1 2 3 4\n");
    char p[1100];
    snprintf(p, sizeof p, "%s/b.npy", dir);
    npy_data d;
    cr_assert_eq(read_npy(p, &d), 0);
    cr_assert_eq(d.n, 4);
    for (int i = 0; i < 4; i++) cr_assert_eq(d.v[i], -(double)(i + 1));
    npy_free(&d);
    proc_result_free(&r);
    /* b.npy exists now: writing it again is fine (it is nobody's input). */
    r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "%s", r.err);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* Outputs, --stats and --trace may all go to a character device such as /dev/null: written
 * where it is, never replaced by a file renamed onto it (which, run as root, turned /dev/null
 * into a plain file). As root the test makes its own device node (a copy of /dev/null's), so
 * nothing outside its directory is at stake; otherwise it writes to /dev/null itself, which a
 * rename could not replace but would have failed on. */
Test(badinput, outputs_to_a_character_device, .timeout = 60) {
    char *dir = make_tmpdir();
    char dev[1100], prog[2600];
    snprintf(dev, sizeof dev, "%s/nul", dir);
    if (mknod(dev, S_IFCHR | 0666, makedev(1, 3)) != 0) snprintf(dev, sizeof dev, "/dev/null");
    snprintf(prog, sizeof prog,
             "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"random\", \"shape\": [300, 200], "
             "\"chunks\": 100, \"seed\": 1}, \"B\": {\"op\": \"sum\", \"args\": [\"A\"], "
             "\"axis\": 0}, \"C\": {\"op\": \"sum\", \"args\": [\"A\"]}}, "
             "\"outputs\": {\"A\": \"%s\", \"B\": \"%s\", \"C\": \"-\"}}",
             dev, dev);
    write_file(dir, "p.json", prog);
    const char *argv[] = {"tessera", "run", "--no-progress", "--stats", dev,
                          "--trace", dev,   "p.json",        NULL};
    proc_result r = run_cmd(dir, argv, 60);
    cr_assert_eq(r.status, 0, "exit %d:\n%s", r.status, r.err);
    cr_assert(strncmp(r.out, "C: ", 3) == 0, "%s", r.out);
    struct stat st;
    cr_assert(stat(dev, &st) == 0 && S_ISCHR(st.st_mode), "%s is not a character device now", dev);
    /* p.json, and nul when the test made it: no temporary left beside them. */
    cr_assert_eq(dir_entries(dir), strcmp(dev, "/dev/null") ? 2 : 1);
    proc_result_free(&r);
    remove_tmpdir(dir);
}

/* --stats and --trace never overwrite the program, an output or each other (exit 2, nothing
 * written), compared by file, not by spelling. */
Test(badinput, stats_and_trace_paths, .timeout = 60) {
    char *dir = make_tmpdir();
    const char *prog = "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"ones\", \"shape\": [3]}}, "
                       "\"outputs\": {\"A\": \"o.npy\"}}";
    write_file(dir, "p.json", prog);
    const char *a1[] = {"tessera", "run", "--stats", "./p.json", "p.json", NULL};
    const char *a2[] = {"tessera", "run", "--trace", "./o.npy", "p.json", NULL};
    const char *a3[] = {"tessera", "run",      "--trace", "t.json",
                        "--stats", "./t.json", "p.json",  NULL};
    const char *const *runs[] = {a1, a2, a3};
    const char *want[] = {"is the program file", "is the output of array \"A\"",
                          "both write \"t.json\""};
    for (int i = 0; i < 3; i++) {
        proc_result r = run_cmd(dir, runs[i], 30);
        cr_assert_eq(r.status, 2, "case %d: exit %d:\n%s", i, r.status, r.err);
        cr_assert(strstr(r.err, want[i]), "case %d:\n%s", i, r.err);
        cr_assert_eq(dir_entries(dir), 1, "case %d wrote a file", i);
        size_t n;
        char *now = slurp(dir, "p.json", &n);
        cr_assert(n == strlen(prog) && !memcmp(now, prog, n));
        free(now);
        proc_result_free(&r);
    }
    remove_tmpdir(dir);
}

/* $TESSERA_HUGE_PAGES (docs/cli/worker.md): a value it does not take is exit 2 before anything
 * starts, naming the variable; each value it takes gives the worker the pages asked for (its -v
 * line) and the same, right results; unset, the worker measures and says both timings. */
Test(badinput, huge_pages_environment, .timeout = 120) {
    char *dir = make_tmpdir();
    /* 3 MiB chunks: pooled buffers, mapped in the pages chosen. */
    write_file(dir, "p.json",
               "{\"tessera\": 1, \"arrays\": {\"A\": {\"op\": \"arange\", \"stop\": 1048576, "
               "\"chunks\": 393216}, \"B\": {\"op\": \"add\", \"args\": [\"A\", 1]}, \"s\": "
               "{\"op\": \"sum\", \"args\": [\"B\"], \"axis\": null}}, \"outputs\": {\"s\": "
               "\"-\"}}");
    const char *bad[] = {"bogus", "2", "yes"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("TESSERA_HUGE_PAGES", bad[i], 1);
        const char *run[] = {"tessera", "run", "p.json", NULL};
        proc_result r = run_cmd(dir, run, 30);
        cr_assert_eq(r.status, 2, "%s: %s", bad[i], r.err);
        char want[64];
        snprintf(want, sizeof want, "TESSERA_HUGE_PAGES=%s", bad[i]);
        cr_assert(strstr(r.err, want) && !strstr(r.err, "local cluster"), "%s", r.err);
        proc_result_free(&r);
        const char *wk[] = {"tessera", "worker", "-s", "127.0.0.1:9", NULL};
        r = run_cmd(dir, wk, 30);
        cr_assert_eq(r.status, 2, "worker, %s: %s", bad[i], r.err);
        cr_assert(strstr(r.err, want), "%s", r.err);
        proc_result_free(&r);
    }
    /* sum(i + 1 for i < 2^20) = 2^20 (2^20 + 1) / 2, exact in float64. */
    const char *want_out = "s: 549756338176\n";
    struct {
        const char *value, *line;
    } good[] = {{"1", "pages: huge, as asked"},
                {"on", "pages: huge, as asked"},
                {"0", "pages: 4 KiB, as asked"},
                {"off", "pages: 4 KiB, as asked"},
                {NULL, "ms in 4 KiB pages)"}};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        if (good[i].value)
            setenv("TESSERA_HUGE_PAGES", good[i].value, 1);
        else
            unsetenv("TESSERA_HUGE_PAGES");
        const char *run[] = {"tessera", "run", "-v", "p.json", NULL};
        proc_result r = run_cmd(dir, run, 60);
        cr_assert_eq(r.status, 0, "%s: %s", good[i].value ? good[i].value : "unset", r.err);
        cr_assert_str_eq(r.out, want_out);
        cr_assert(strstr(r.err, good[i].line), "%s: want \"%s\" in %s",
                  good[i].value ? good[i].value : "unset", good[i].line, r.err);
        proc_result_free(&r);
    }
    unsetenv("TESSERA_HUGE_PAGES");
    remove_tmpdir(dir);
}
