/* loadgen: the lean HTTP/1.1 peers of BenchmarkHTTPThroughput.
 *
 *   cc -O2 -pthread -o loadgen loadgen.c
 *   ./loadgen upstream               prints its port, then serves
 *   ./loadgen clients HOST PORT PATH CLIENTS WARMUP CALLS
 *
 * On a 2-core machine the clients and the upstream share the cores with
 * the proxy being measured: whatever they cost is taken from it. So they
 * are as cheap as an HTTP/1.1 peer can be: one thread per connection,
 * blocking sockets, requests from prepared bytes, answers read by
 * Content-Length. Nothing is measured here but the round trips.
 *
 * upstream: answers every POST with a tools/call result carrying the
 * request's id (and Content-Length), on keep-alive connections.
 *
 * clients: CLIENTS threads, each with its own keep-alive connection, send
 * WARMUP calls each, then CALLS calls in all (one at a time per thread),
 * checking that every answer is a 200 result for its request. Prints one
 * line: "calls N ns NS p50 NS p99 NS cpu NS" (cpu: this process's user and
 * system time). Exits 1 with a message on the first bad answer. */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (64 << 10)

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int write_all(int fd, const char *b, size_t n) {
  while (n > 0) {
    ssize_t m = write(fd, b, n);
    if (m <= 0) return -1;
    b += m;
    n -= (size_t)m;
  }
  return 0;
}

/* conn buffers what was read from a socket beyond the current message. */
struct conn {
  int fd;
  char buf[BUF];
  size_t len;
};

/* read_message reads one HTTP message (head and Content-Length body) into
 * c->buf. It returns the length of the message, and sets *body to its body
 * and *blen to the body's length; -1 on end of stream or error. */
static long read_message(struct conn *c, char **body, long *blen) {
  for (;;) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end) {
      long head = end + 4 - c->buf, clen = -1;
      for (char *p = c->buf; p < end; p++) {
        if ((p == c->buf || p[-1] == '\n') && strncasecmp(p, "content-length:", 15) == 0) {
          clen = strtol(p + 15, NULL, 10);
          break;
        }
      }
      if (clen < 0 || head + clen > BUF) {
        fprintf(stderr, "loadgen: a message without a usable Content-Length: %.*s\n", (int)head, c->buf);
        exit(1);
      }
      if ((long)c->len >= head + clen) {
        *body = c->buf + head;
        *blen = clen;
        return head + clen;
      }
    }
    if (c->len == BUF) {
      fprintf(stderr, "loadgen: message too large\n");
      exit(1);
    }
    ssize_t n = read(c->fd, c->buf + c->len, BUF - c->len);
    if (n <= 0) return -1;
    c->len += (size_t)n;
  }
}

/* consume drops the first n bytes of c->buf. */
static void consume(struct conn *c, long n) {
  memmove(c->buf, c->buf + n, c->len - (size_t)n);
  c->len -= (size_t)n;
}

static void *serve(void *arg) {
  struct conn *c = arg;
  char out[512];
  for (;;) {
    char *body;
    long blen, n = read_message(c, &body, &blen);
    if (n < 0) break;
    char *id = memmem(body, (size_t)blen, "\"id\":", 5);
    char *comma = id ? memchr(id, ',', (size_t)(body + blen - id)) : NULL;
    if (!comma) break;
    char res[256];
    int rlen = snprintf(res, sizeof res,
                        "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}],\"isError\":false}}",
                        (int)(comma - id - 5), id + 5);
    int olen = snprintf(out, sizeof out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", rlen, res);
    consume(c, n);
    if (write_all(c->fd, out, (size_t)olen)) break;
  }
  close(c->fd);
  free(c);
  return NULL;
}

static _Noreturn void upstream(void) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 128) || getsockname(l, (struct sockaddr *)&a, &alen))
    die("listen");
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  for (;;) {
    int fd = accept(l, NULL, NULL);
    if (fd < 0) die("accept");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    c->fd = fd;
    pthread_t t;
    if (pthread_create(&t, NULL, serve, c)) die("thread");
    pthread_detach(t);
  }
}

static const char *host, *path;
static int port;
static long warmup, calls;
static atomic_long next_call;      /* the next call to claim */
static long long *lat;             /* the timed calls' latencies, ns */
static pthread_barrier_t ready;    /* warm-up done in every thread */

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* call sends tools/call number id and checks its answer. */
static void call(struct conn *c, long id) {
  char body[256], req[512];
  int blen = snprintf(body, sizeof body,
                      "{\"jsonrpc\":\"2.0\",\"id\":%ld,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"path\":\"/srv/a\",\"text\":\"hello\"}}}",
                      id);
  int rlen = snprintf(req, sizeof req,
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: %d\r\n\r\n%s",
                      path, host, port, blen, body);
  if (write_all(c->fd, req, (size_t)rlen)) die("write");
  char *ans;
  long alen, n = read_message(c, &ans, &alen);
  if (n < 0) die("read");
  char want[32];
  int wlen = snprintf(want, sizeof want, "\"id\":%ld,", id);
  if (strncmp(c->buf, "HTTP/1.1 200 ", 13) != 0 || !memmem(ans, (size_t)alen, want, (size_t)wlen) ||
      memmem(ans, (size_t)alen, "\"isError\":true", 14)) {
    fprintf(stderr, "loadgen: answer to call %ld is not a result for it: %.*s\n", id, (int)n, c->buf);
    exit(1);
  }
  consume(c, n);
}

static void *client(void *arg) {
  long me = (long)arg;
  struct conn *c = calloc(1, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a)) die("connect");
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  long id = (me + 1) * 1000000000L; /* ids distinct across threads */
  for (long i = 0; i < warmup; i++) call(c, id++);
  pthread_barrier_wait(&ready);
  for (;;) {
    long i = atomic_fetch_add(&next_call, 1);
    if (i >= calls) break;
    long long t0 = now_ns();
    call(c, id++);
    lat[i] = now_ns() - t0;
  }
  close(c->fd);
  free(c);
  return NULL;
}

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

static long long cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "upstream") == 0) upstream();
  if (argc != 8 || strcmp(argv[1], "clients") != 0) {
    fprintf(stderr, "usage: loadgen upstream | loadgen clients HOST PORT PATH CLIENTS WARMUP CALLS\n");
    return 2;
  }
  host = argv[2];
  port = atoi(argv[3]);
  path = argv[4];
  int n = atoi(argv[5]);
  warmup = atol(argv[6]);
  calls = atol(argv[7]);
  if (n < 1 || calls < 1) return 2;
  lat = calloc((size_t)calls, sizeof *lat);
  pthread_barrier_init(&ready, NULL, (unsigned)n + 1);
  pthread_t *ts = calloc((size_t)n, sizeof *ts);
  for (long i = 0; i < n; i++)
    if (pthread_create(&ts[i], NULL, client, (void *)i)) die("thread");
  pthread_barrier_wait(&ready);
  long long t0 = now_ns(), c0 = cpu_ns();
  for (int i = 0; i < n; i++) pthread_join(ts[i], NULL);
  long long elapsed = now_ns() - t0, cpu = cpu_ns() - c0;
  qsort(lat, (size_t)calls, sizeof *lat, cmp);
  printf("calls %ld ns %lld p50 %lld p99 %lld cpu %lld\n", calls, elapsed, lat[calls / 2], lat[calls * 99 / 100], cpu);
  return 0;
}
