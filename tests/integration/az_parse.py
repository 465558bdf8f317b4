"""Feeds argv lists to the real Azure CLI's own parser and validators, one process, for az_oracle.rs.

Reads a JSON list of argv lists (without the leading `az`) on stdin; writes one JSON line per argv:
{"argv": [...], "code": N, "stderr": "..."}. The Azure CLI (azure.cli.core and its command modules)
is imported once; each argv then runs in a forked child exactly as `az ARGV` would (`cli.invoke`,
what azure/cli/__main__.py calls), so start-up is paid once, not per command. Run it logged out
(empty AZURE_CONFIG_DIR) and offline: the CLI parses every argument before it asks for an account,
so a correct command ends at the login error and a wrong one at a parse error (exit 2).
"""
import json
import os
import sys
import tempfile

from azure.cli.core import get_default_cli

# Warm the command modules the guidance uses, so each forked child finds them imported.
import azure.cli.command_modules.network  # noqa: F401
import azure.cli.command_modules.acs  # noqa: F401
import azure.cli.command_modules.cdn  # noqa: F401
import azure.cli.command_modules.extension  # noqa: F401
import azure.cli.command_modules.acs.custom  # noqa: F401
import azure.cli.command_modules.network.custom  # noqa: F401
import azure.cli.core._profile  # noqa: F401
import azure.cli.core.commands.arm  # noqa: F401
import azure.cli.core.aaz  # noqa: F401


def run(argv):
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(err.fileno(), 1)
                os.dup2(err.fileno(), 2)
                code = get_default_cli().invoke(argv)
            except SystemExit as ex:
                code = ex.code if isinstance(ex.code, int) else 1
            except BaseException as ex:  # reported, never hidden: the test names the command
                sys.stderr.write(f"driver: {type(ex).__name__}: {ex}\n")
                code = 99
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if code is not None else 0)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return {"argv": argv, "code": os.waitstatus_to_exitcode(status), "stderr": text}


def main():
    for argv in json.load(sys.stdin):
        print(json.dumps(run(argv)), flush=True)


if __name__ == "__main__":
    main()
