/**
 * The ops CLI with `--local`: the same commands, with the same inputs, run on a local migration
 * (the rehearsal's embedded PostgreSQL and the CDK app's own state machines, executed in this
 * process) kept in a folder between commands, so the runbook can be practised without AWS.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { InvalidInputError } from '../../lambdas/core/errors';
import { orchestrate } from '../../lambdas/core/orchestrator';
import { removeNow } from '../rehearsal/exit-cleanup';
import { localExecutor } from '../rehearsal/executions';
import { claim, openLocalEnvironment, type LocalSettings } from '../rehearsal/local-environment';
import { databaseOfUrl } from '../rehearsal/options';
import { startProgress } from '../rehearsal/progress';
import type { OpsDeps } from './aws';
import { STATE_MACHINES, type OpsCommand } from './commands';
import { executionRequest } from './requests';

/** The V1 a new local migration generates: small enough that every phase takes seconds. */
export const LOCAL_V1 = { devices: 100, telemetry: 100_000, seed: 1 } as const;

/** The settings of a new local migration (a rehearsal kept with --keep-db keeps its own). */
export const LOCAL_SETTINGS: LocalSettings = { concurrency: 2, windowRows: 20_000, bakeSeconds: 2 };

/** Files that only a local migration folder holds: `reset` deletes nothing else. */
const LOCAL_MARKERS = ['settings.json', 'parameters.json', 'pg'];

/** `reset --local`: stops a server left running (a killed command) and deletes the folder. */
function reset(command: OpsCommand, deps: OpsDeps): number {
  const dir = resolve(command.localDir);
  if (!existsSync(dir)) {
    deps.print(`no local migration in ${command.localDir}: nothing to delete`);
    return 0;
  }
  if (!LOCAL_MARKERS.some((marker) => existsSync(join(dir, marker)))) {
    throw new InvalidInputError('command-line flags', [
      {
        field: '--local-dir',
        problem: `${command.localDir} does not hold a local migration; nothing was deleted`,
      },
    ]);
  }
  // Refused while another command uses it (LocalMigrationInUseError); then nothing is running.
  claim(dir);
  removeNow(dir, join(dir, 'pg', 'data'));
  deps.print(`deleted the local migration in ${command.localDir}`);
  if (command.json) deps.print(JSON.stringify({ ok: true, command: 'reset', local: true, directory: dir }));
  return 0;
}

/**
 * Runs one command on the local migration in `--local-dir` (created on first use, with a
 * generated V1, LOCAL_V1 unless `options.v1`) and prints what the execution did; `status` prints its output (phases,
 * checklist). Exit code 0 when the execution succeeded, 1 when it failed or stopped.
 */
export async function runLocal(
  command: OpsCommand,
  deps: OpsDeps,
  options: {
    /** The V1 a new local migration generates. @default LOCAL_V1 */
    v1?: { devices: number; telemetry: number; seed: number };
    /** Databases to use instead of the embedded ones (tests). */
    databases?: { v1Url: string; v2Url: string };
  } = {},
): Promise<number> {
  if (command.command === 'reset') return reset(command, deps);
  const print = deps.print;
  const printError = deps.printError ?? print;
  const { stateMachine, input } = executionRequest(command, deps.user);
  const env = await openLocalEnvironment({
    keepIn: command.localDir,
    ...options.databases,
    // Test databases are created empty for the purpose: generating into them is asked for.
    ...(options.databases ? { generateGivenV1In: databaseOfUrl(options.databases.v1Url) } : {}),
    generate: options.v1 ?? LOCAL_V1,
    ...LOCAL_SETTINGS,
    backupDirectory: join(command.localDir, 'backups'),
    print,
  });
  const progress = startProgress(env, { print, tty: false });
  try {
    const held = new AbortController();
    const executor = localExecutor(env, {
      print,
      progress,
      bakeSeconds: env.settings.bakeSeconds,
      onState: (_machine, state) => {
        // A deployed cutover waits here until someone resumes it; a local one cannot be resumed
        // while it runs (one command at a time), so it stops instead.
        if (state === 'Held: wait') held.abort(new Error('the cutover is held'));
      },
    });
    print(`local ${STATE_MACHINES[stateMachine].title} execution with input ${JSON.stringify(input)}`);
    const run = await executor.execute(stateMachine, input, held.signal);
    await progress.stop();
    const traffic = (await env.parameters.get(env.names.trafficPercentage)) ?? '0';
    const result: Record<string, unknown> = {
      ok: run.status === 'SUCCEEDED',
      command: command.command,
      local: true,
      input,
      status: run.status,
      trafficPercentage: Number(traffic),
    };
    if (run.status === 'SUCCEEDED') {
      result.output = run.output;
      if (command.command === 'status') print(JSON.stringify(run.output, null, 2));
    } else if (run.status === 'ABORTED') {
      // As the state machine's Release state would have: the stopped run gives the lock back.
      await orchestrate(env.deps, { task: 'release', actor: run.executionId });
      result.error = 'CutoverHeld';
      printError(
        `the cutover is held at ${traffic} %: resume it with \`npm run migrate -- cutover --resume --local\`, ` +
          'then run `npm run migrate -- cutover --local` again (a deployed cutover waits while held; a local one stops)',
      );
    } else {
      result.error = run.error;
      result.cause = run.cause;
    }
    if (command.json) print(JSON.stringify(result));
    return run.status === 'SUCCEEDED' ? 0 : 1;
  } finally {
    await progress.stop();
    await env.close();
  }
}
