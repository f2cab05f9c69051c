/* rethread.c: does a oneDNN primitive follow a later omp_set_num_threads? It creates a 3x3
 * convolution (nChw16c, 32 x 64 x 32 x 32) with FIRST OpenMP threads, switches to SECOND, runs
 * it, then creates it again at SECOND and runs that, printing after each run the threads the
 * process has (/proc/self/task: the OpenMP runtime starts a team's threads on first use) and the
 * CPU time over the wall time of 10 runs.
 *
 * Build and run: cc -O2 -fopenmp bench/rethread.c -o /tmp/rethread -ldnnl
 *                OMP_WAIT_POLICY=passive /tmp/rethread 1 2; /tmp/rethread 2 1
 * With oneDNN 2.6 (OpenMP): created at 1 and run at 2, the process keeps 1 thread (the primitive
 * runs the count it was created with); created again at 2, a second thread appears. That is why
 * the CPU backend re-creates its primitives when the thread count changes (cpu_internal.h). */
#include <dirent.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(x)                                                              \
  do {                                                                        \
    if ((x) != dnnl_success) {                                                \
      fprintf(stderr, "rethread: %s failed (line %d)\n", #x, __LINE__);       \
      exit(1);                                                                \
    }                                                                         \
  } while (0)

static dnnl_engine_t engine;
static dnnl_stream_t stream;

static int tasks(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static double seconds(clockid_t c) {
  struct timespec t;
  clock_gettime(c, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t x, w, y;
} conv;

static conv conv_create(void) {
  dnnl_dims_t xd = {32, 64, 32, 32}, wd = {64, 64, 3, 3}, strides = {1, 1}, pad = {1, 1};
  dnnl_memory_desc_t x, w;
  CHECK(dnnl_memory_desc_init_by_tag(&x, 4, xd, dnnl_f32, dnnl_nChw16c));
  CHECK(dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any));
  dnnl_convolution_desc_t d;
  CHECK(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training, dnnl_convolution_direct, &x,
                                           &w, NULL, &x, strides, pad, pad));
  dnnl_primitive_desc_t pd;
  CHECK(dnnl_primitive_desc_create(&pd, &d, NULL, engine, NULL));
  conv c;
  CHECK(dnnl_primitive_create(&c.prim, pd));
  CHECK(dnnl_memory_create(&c.x, &x, engine, DNNL_MEMORY_ALLOCATE));
  CHECK(dnnl_memory_create(&c.w, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                           engine, DNNL_MEMORY_ALLOCATE));
  CHECK(dnnl_memory_create(&c.y, &x, engine, DNNL_MEMORY_ALLOCATE));
  CHECK(dnnl_primitive_desc_destroy(pd));
  return c;
}

static void conv_run(const conv *c, const char *what) {
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, c->x}, {DNNL_ARG_WEIGHTS, c->w}, {DNNL_ARG_DST, c->y}};
  double t0 = 0, c0 = 0;
  for (int i = 0; i < 11; i++) {
    if (i == 1) t0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    CHECK(dnnl_primitive_execute(c->prim, stream, 3, args));
    CHECK(dnnl_stream_wait(stream));
  }
  double wall = seconds(CLOCK_MONOTONIC) - t0, cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
  printf("%-32s omp_get_max_threads %d, process threads %d, cpu / wall %.2f\n", what,
         omp_get_max_threads(), tasks(), cpu / wall);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: rethread FIRST SECOND\n");
    return 1;
  }
  CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0));
  CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags));
  omp_set_num_threads(atoi(argv[1]));
  conv a = conv_create();
  omp_set_num_threads(atoi(argv[2]));
  conv_run(&a, "created at FIRST, run at SECOND:");
  conv b = conv_create();
  conv_run(&b, "created at SECOND, run at SECOND:");
  return 0;
}
