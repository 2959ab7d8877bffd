/* storage/log.h — per-organisation, per-worker append-only logs: the umbrella
 * header for code outside storage/ (engine, tools, tests).
 *
 * Layout: DATA/logs/<org-id>/w<N>/<base-seq, 20 digits>.seg, each file a segment
 * (record.h). Each worker appends only to its own files; readers merge workers by
 * receive time. One header per part, each the contract of its file, and
 * none of them includes another part's implementation needs:
 *   log_name.h      the layout's names and directory helpers
 *   log_scan.h      a segment's records in file order, resync after damage
 *   log_index.h     the sparse time index of sealed segments
 *   log_writer.h    opening, recovering, extending and rolling the newest segment
 *   log_cursor.h    the merging (range, follow) cursor readers use
 *   log_retention.h deleting old segments
 *   log_verify.h    `sluice log verify`
 * Inside storage/, a file includes just the parts it uses.
 */
#ifndef SLUICE_STORAGE_LOG_H
#define SLUICE_STORAGE_LOG_H

#include "storage/log_cursor.h"
#include "storage/log_index.h"
#include "storage/log_name.h"
#include "storage/log_retention.h"
#include "storage/log_scan.h"
#include "storage/log_verify.h"
#include "storage/log_writer.h"
#include "storage/record.h"

#endif
