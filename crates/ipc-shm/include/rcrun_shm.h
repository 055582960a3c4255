/* rcrun shared-memory channels: C ABI of librcrun_ipc_shm.so (crates/ipc-shm/src/ffi.rs).
 *
 * A channel is a region file (in a container: /dev/rcrun-shm/NAME, mounted by rcrun from
 * the org.rcrun.shm.channels annotation) with one single-producer single-consumer ring per
 * direction. One thread per direction at a time: a handle may be used for sending by one
 * thread while another receives, but not by two senders or two receivers.
 *
 * Names without '/' are looked up in $RCRUN_SHM_DIR (default /dev/rcrun-shm); a name with
 * '/' is a path. Functions returning int return 0 or a negative RCRUN_SHM_E* code;
 * rcrun_shm_last_error() describes the last failure of the calling thread.
 */
#ifndef RCRUN_SHM_H
#define RCRUN_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RCRUN_SHM_OK 0
#define RCRUN_SHM_EPEER_DIED (-1)   /* the peer process died (killed, crashed, exec'd) */
#define RCRUN_SHM_EPEER_CLOSED (-2) /* the peer closed; everything it sent was read */
#define RCRUN_SHM_ETIMEOUT (-3)
#define RCRUN_SHM_ETOOBIG (-4)      /* larger than rcrun_shm_max_frame() (reserve) */
#define RCRUN_SHM_EINVAL (-5)
#define RCRUN_SHM_EBUSY (-6)        /* the channel already has a live listener/connector */
#define RCRUN_SHM_EIO (-7)          /* region missing, not a region, mmap failed... */
#define RCRUN_SHM_ECORRUPT (-8)     /* the peer wrote impossible ring positions */
#define RCRUN_SHM_ESTATE (-9)       /* call out of order (commit without reserve...) */

typedef struct RcrunShm rcrun_shm;

/* spin_us: how long a blocked call spins before sleeping on a futex (-1: never sleep);
 * timeout_ms: how long to wait for the peer to appear (-1: forever). NULL on error. */
rcrun_shm *rcrun_shm_listen(const char *name, int64_t spin_us, int64_t timeout_ms);
rcrun_shm *rcrun_shm_connect(const char *name, int64_t spin_us, int64_t timeout_ms);

/* Send one message (copied; larger than rcrun_shm_max_frame() is sent in fragments). */
int rcrun_shm_send(rcrun_shm *ch, const void *buf, size_t len);
/* Receive one whole message; returns its length (> cap: truncated to cap) or an error. */
ssize_t rcrun_shm_recv(rcrun_shm *ch, void *buf, size_t cap);

/* Zero copy: write a message in place, then publish its first len bytes. */
void *rcrun_shm_reserve(rcrun_shm *ch, size_t len);
int rcrun_shm_commit(rcrun_shm *ch, size_t len);
/* Zero copy: read the next frame in place until rcrun_shm_release. *more is 1 for a
 * fragment of a message sent by rcrun_shm_send above rcrun_shm_max_frame(). */
const void *rcrun_shm_recv_ref(rcrun_shm *ch, size_t *len, int *more);
int rcrun_shm_release(rcrun_shm *ch);

size_t rcrun_shm_max_frame(rcrun_shm *ch);
void rcrun_shm_close(rcrun_shm *ch);

/* Host side: create a region file (ring_size per direction, a power of two >= 4096;
 * numa_node -1 for none). */
int rcrun_shm_create_region(const char *path, uint64_t ring_size, int numa_node, unsigned mode);

const char *rcrun_shm_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
