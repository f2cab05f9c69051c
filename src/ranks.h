/* ranks.h: rank agreement. Every rank must run the same configuration on the same data, and an
 * input error found by one rank (rank 0's run directory, say) must stop them all: collectives
 * that return the same verdict on every rank, with one message naming what differs. */
#ifndef DT_RANKS_H
#define DT_RANKS_H

#include "comm/comm.h"
#include "config.h"
#include "data/dataset.h"

/* Collective: the first failing status of any rank (DT_ERR_IO for a rank that has none of its
 * own), DT_OK when every rank passed DT_OK. The message stays with the rank that set it. */
dt_status dt_ranks_agree(dt_comm *comm, dt_status st);

/* Collective, first thing: every rank must run the same configuration. The ranks exchange one
 * digest per key; on a difference every rank returns DT_ERR_CONFIG with a message (for rank 0
 * to print) naming the first differing key, rank 0's value and the first other value with the
 * ranks that have it. */
dt_status dt_ranks_same_config(dt_comm *comm, const dt_config *cfg);

/* Collective, after every rank has loaded its dataset (after data.train_limit and
 * data.test_limit): the same sizes and CRC-32 of images and labels everywhere. Returns the
 * same verdict on every rank; on a difference *st holds DT_ERR_DATA and the message on rank 0
 * (which prints it). */
bool dt_ranks_same_dataset(dt_comm *comm, const dt_config *cfg, const dt_dataset *ds,
                           dt_status *st);

#endif
