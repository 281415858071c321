/* `tessera check`: validates a program file without running it, and describes every array
 * (shape, dtype, chunks) and the size of the chunk-task graph, or prints that graph as dot. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void print_tuple(const int64_t *v, int n) {
    putchar('(');
    for (int i = 0; i < n; i++) printf(i ? ", %lld" : "%lld", (long long)v[i]);
    if (n == 1) putchar(',');
    putchar(')');
}

static const char check_usage[] =
    "usage: tessera check [--dot] [--no-fuse] FILE\n"
    "\n"
    "Validates a program file without running it. Prints one line per array (name, op, shape,\n"
    "dtype, chunk size per axis and the chunk grid) and ends with \"N tasks\", the size of\n"
    "the chunk-task graph of the outputs, after fusion: an elementwise chain (and one feeding a\n"
    "reduction's partials) is one task per chunk (docs/arrays.md).\n"
    "\n"
    "options:\n"
    "  --dot      print the chunk-task graph in Graphviz dot syntax instead (a fused task\n"
    "             is labelled with its chain, e.g. fused(add,mul,sqrt))\n"
    "  --no-fuse  count (or print) the graph without fusion\n"
    "  --help     this text\n"
    "\n"
    "exit status: 0 valid, 2 invalid.\n";

int cmd_check(int argc, char **argv) {
    static const struct option longopts[] = {
        {"dot", no_argument, 0, 'd'},
        {"no-fuse", no_argument, 0, 'U'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int dot = 0, no_fuse = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            dot = 1;
            break;
        case 'U':
            no_fuse = 1;
            break;
        case 'h':
            fputs(check_usage, stdout);
            return EXIT_OK;
        default:
            fputs(check_usage, stderr);
            return EXIT_INVALID;
        }
    }
    if (optind != argc - 1) {
        cli_error("check needs exactly one program file (see tessera check --help)");
        return EXIT_INVALID;
    }
    tsr_client *c;
    int rc = tsr_client_new_offline(&c);
    if (rc) {
        cli_error("%s", tsr_last_error());
        return EXIT_FAILED;
    }
    if (no_fuse) tsr_client_set_fusion(c, 0);
    tsr_program *p;
    rc = tsr_program_load(c, argv[optind], &p);
    if (rc) {
        cli_error("%s", tsr_client_errmsg(c));
        tsr_client_free(c);
        return EXIT_INVALID;
    }
    size_t nout = tsr_program_noutputs(p);
    tsr_array **outs = calloc(nout ? nout : 1, sizeof *outs);
    if (!outs) {
        tsr_program_free(p);
        tsr_client_free(c);
        return EXIT_FAILED;
    }
    for (size_t i = 0; i < nout; i++) outs[i] = tsr_program_output(p, i, NULL);
    if (dot) {
        rc = tsr_write_dot(outs, nout, stdout);
    } else {
        for (size_t i = 0; i < tsr_program_narrays(p); i++) {
            tsr_array *a = tsr_program_array(p, i);
            int nd = tsr_array_ndim(a);
            int64_t first[TSR_MAX_NDIM], grid[TSR_MAX_NDIM];
            for (int d = 0; d < nd; d++) {
                grid[d] = tsr_array_numchunks(a, d);
                first[d] = grid[d] ? tsr_array_chunks(a, d)[0] : 0;
            }
            printf("%s: %s shape=", tsr_array_name(a), tsr_array_op(a));
            print_tuple(tsr_array_shape(a), nd);
            printf(" dtype=%s chunks=", tsr_dtype_name(tsr_array_dtype(a)));
            print_tuple(first, nd);
            printf(" grid=");
            print_tuple(grid, nd);
            putchar('\n');
        }
        int64_t n = tsr_task_count(outs, nout);
        if (n < 0) {
            rc = (int)n;
        } else {
            printf("%lld tasks\n", (long long)n);
        }
    }
    if (rc) cli_error("%s", tsr_client_errmsg(c));
    free(outs);
    tsr_program_free(p);
    tsr_client_free(c);
    return rc ? EXIT_FAILED : EXIT_OK;
}
