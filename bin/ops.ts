/**
 * The ops CLI's logic (bin/migrate.ts is the thin wrapper): parses `<command> [flags]`
 * (bin/ops/commands.ts), then starts the command's execution (its state machine and input:
 * bin/ops/requests.ts) on AWS (bin/ops/aws.ts) or, with `--local`, runs it on a local migration
 * (bin/ops/local.ts, injected as `deps.local`).
 */
import { MigrationError } from '../lambdas/core/errors';
import { errorLines, exitCodeOf, HelpRequest } from './cli-args';
import { runOnAws, type OpsDeps } from './ops/aws';
import { MIGRATE_COMMAND, parseCommand, USAGE } from './ops/commands';

export {
  consoleLink,
  describeAwsError,
  executionName,
  MAX_EXECUTION_NAME_LENGTH,
  regionOf,
  resolveStateMachineArn,
  type OpsDeps,
} from './ops/aws';
export {
  COMMANDS,
  commandUsage,
  DEFAULT_WAIT_TIMEOUT_SECONDS,
  parseCommand,
  PHASES,
  STATE_MACHINE_ARN,
  STATE_MACHINES,
  USAGE,
  type CommandName,
  type OpsCommand,
  type Phase,
  type StateMachineKey,
} from './ops/commands';
export { executionRequest } from './ops/requests';

/** 2 for a bad command line or configuration, 1 for anything else. */
export const exitCodeFor = exitCodeOf;

/**
 * Runs one ops command; returns the process exit code (0 done, 1 AWS or execution failure,
 * 2 bad command line). `--help` prints the usage (exit 0). Errors are printed by name with a
 * hint, never as a stack.
 */
export async function runOps(argv: string[], deps: OpsDeps): Promise<number> {
  const print = deps.print;
  const printError = deps.printError ?? deps.print;
  const json = argv.includes('--json');
  try {
    const command = parseCommand(argv);
    if (command.local) {
      if (!deps.local) throw new Error('this build of the CLI cannot run local migrations');
      return await deps.local(command, deps);
    }
    if (command.command === 'reset') throw new Error('reset needs --local');
    return await runOnAws(command, deps);
  } catch (error) {
    if (error instanceof HelpRequest) {
      print(error.text);
      return 0;
    }
    const e = error instanceof Error ? error : new Error(String(error));
    for (const line of errorLines(e)) printError(line);
    if (
      e instanceof MigrationError &&
      e.name === 'InvalidInputError' &&
      (e as { what?: string }).what === 'command line'
    ) {
      printError(USAGE);
    } else if (exitCodeOf(e) === 2 && argv[0] && !argv[0].startsWith('-')) {
      printError(`run \`${MIGRATE_COMMAND} ${argv[0]} --help\` for its flags`);
    }
    if (json) {
      const detail = e instanceof MigrationError ? e.toJSON() : { name: e.name, message: e.message };
      print(JSON.stringify({ ok: false, error: detail }));
    }
    return exitCodeOf(e);
  }
}
