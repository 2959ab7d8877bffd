/* tools/cli.h — what the sluice CLI's command files share.
 *
 * tools/sluice.c parses the global options (--data-dir, --help, --version) and
 * dispatches; each command family that lives in its own file exports one entry
 * point here. Conventions every command follows (INTERFACE.md, "sluice"):
 * what a command creates goes to stdout alone, guidance and warnings to stderr,
 * an error is one line on stderr starting "sluice: ", and the return value is
 * the process exit code: 0 success, 1 failure, 2 bad usage.
 */
#ifndef SLUICE_TOOLS_CLI_H
#define SLUICE_TOOLS_CLI_H

/* `sluice log ...` (tools/cmd_log.c). data_dir is the resolved data directory
 * (--data-dir, else $SLUICE_DATA_DIR, else "./data"); the store may not exist.
 * argv[0] is "log", argv[1] the subcommand ("cat", "verify") or absent, then
 * its options, so getopt-style parsing can start at index 1; argc counts them
 * all and argv[argc] is NULL. Returns the exit code (0, 1, 2) as above. */
int cmd_log(const char *data_dir, int argc, char **argv);

#endif
