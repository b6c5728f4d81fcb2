/**
 * The last step of `npm run build` (after `tsc -p tsconfig.build.json`): the CLI's source runs
 * through tsx (`#!/usr/bin/env -S npx tsx`), its build with plain Node, so the installed
 * package's `migrate` command needs neither tsx nor the network.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const cli = join(__dirname, '..', 'dist', 'bin', 'migrate.js');
const source = readFileSync(cli, 'utf8');
if (!source.startsWith('#!')) throw new Error(`${cli} has no shebang line to replace`);
writeFileSync(cli, source.replace(/^#!.*/, '#!/usr/bin/env node'));
chmodSync(cli, 0o755);
