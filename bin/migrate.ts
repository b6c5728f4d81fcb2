#!/usr/bin/env -S npx tsx
/**
 * `npx tsx bin/migrate.ts <status|advance|cutover|rollback> [flags]`: the ops CLI for the
 * deployed migration. Each command starts an execution of a state machine and prints its ARN
 * and console link; see bin/ops.ts (or `migrate help`) for the commands and flags.
 */
import { userInfo } from 'node:os';
import { SFNClient } from '@aws-sdk/client-sfn';
import { runOps } from './ops';

function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    // No passwd entry (some containers): fall back to what the shell says.
    return process.env.USER ?? process.env.USERNAME ?? 'unknown';
  }
}

runOps(process.argv.slice(2), {
  // The client lives in the state machine's region, whatever AWS_REGION says.
  sfn: (region) => new SFNClient({ region }),
  now: () => new Date(),
  user: osUser(),
  print: (line) => console.log(line),
  printError: (line) => console.error(line),
}).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  },
);
