import { randomBytes } from 'node:crypto';

let backupsNamed = 0;

/**
 * A backup's folder name: the label, the UTC time to the millisecond, and a suffix that never
 * repeats within a process (a counter after 4 random bytes, which set processes apart).
 */
export function backupName(
  label: string,
  now = new Date(),
  random = `${randomBytes(4).toString('hex')}${(++backupsNamed).toString(36)}`,
): string {
  const safe = label
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_')
    .slice(0, 30);
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('.', '').replace('Z', '').toLowerCase(); // 20260101t101010123
  return `${safe}_${stamp}_${random}`;
}
