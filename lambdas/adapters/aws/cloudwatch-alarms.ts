import {
  DescribeAlarmsCommand,
  type CloudWatchClient,
  type CompositeAlarm,
  type MetricAlarm,
} from '@aws-sdk/client-cloudwatch';
import { AlarmLookupError } from '../../core/errors';
import type { AlarmPort, AlarmState } from '../../ports/alarms';

/** DescribeAlarms accepts at most this many alarm names per call. */
export const DESCRIBE_ALARMS_MAX_NAMES = 100;

export interface CloudWatchAlarmsOptions {
  /** The MigrationHealth composite alarm (its full name, stack name included). */
  compositeAlarmName: string;
  /**
   * The alarms to read besides the composite.
   * @default - the alarms named in the composite alarm's rule
   */
  alarmNames?: string[];
}

/**
 * The alarm names a composite alarm rule refers to, e.g. from
 * `(ALARM("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:Dlq") OR ALARM(Errors))`:
 * `Dlq`, `Errors`. ARNs are reduced to the name after `:alarm:`.
 */
export function alarmNamesInRule(rule: string): string[] {
  const names: string[] = [];
  for (const match of rule.matchAll(
    /\b(?:ALARM|OK|INSUFFICIENT_DATA)\s*\(\s*(?:"([^"]+)"|([^)\s]+))\s*\)/g,
  )) {
    const ref = (match[1] ?? match[2]).trim();
    const at = ref.indexOf(':alarm:');
    const name = ref.startsWith('arn:') && at >= 0 ? ref.slice(at + ':alarm:'.length) : ref;
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

function isThrottling(error: unknown): boolean {
  const e = error as { name?: unknown; $metadata?: { httpStatusCode?: unknown } } | null;
  return (
    (typeof e?.name === 'string' && /throttl/i.test(e.name)) ||
    e?.$metadata?.httpStatusCode === 429 ||
    (e as { $retryable?: unknown } | null)?.$retryable !== undefined
  );
}

type Described = { name: string; state: AlarmState['state']; reason?: string; rule?: string };

/**
 * The alarm port over CloudWatch: DescribeAlarms (composite and metric alarms, every page) on
 * the MigrationHealth composite alarm and the alarms it watches; returns those in ALARM with
 * CloudWatch's StateReason. An alarm that does not exist is an AlarmLookupError, never "healthy".
 */
export class CloudWatchAlarms implements AlarmPort {
  constructor(
    private readonly client: CloudWatchClient,
    private readonly options: CloudWatchAlarmsOptions,
  ) {}

  async firing(): Promise<AlarmState[]> {
    const composite = this.options.compositeAlarmName;
    const wanted = [composite, ...(this.options.alarmNames ?? []).filter((n) => n !== composite)];
    const found = await this.describe(wanted);
    if (!this.options.alarmNames) {
      const children = alarmNamesInRule(found.get(composite)?.rule ?? '').filter((n) => !found.has(n));
      for (const [name, alarm] of await this.describe(children)) found.set(name, alarm);
      wanted.push(...children);
    }
    const missing = wanted.filter((n) => !found.has(n));
    if (missing.length > 0) {
      throw new AlarmLookupError(missing, `CloudWatch has no alarm named ${missing.join(', ')}`);
    }
    return wanted
      .map((n) => found.get(n)!)
      .filter((a) => a.state === 'ALARM')
      .map((a) => ({
        name: a.name,
        state: a.state,
        ...(a.reason !== undefined ? { reason: a.reason } : {}),
      }));
  }

  private async describe(names: string[]): Promise<Map<string, Described>> {
    const found = new Map<string, Described>();
    for (let i = 0; i < names.length; i += DESCRIBE_ALARMS_MAX_NAMES) {
      const chunk = names.slice(i, i + DESCRIBE_ALARMS_MAX_NAMES);
      let nextToken: string | undefined;
      do {
        let out;
        try {
          out = await this.client.send(
            new DescribeAlarmsCommand({
              AlarmNames: chunk,
              AlarmTypes: ['CompositeAlarm', 'MetricAlarm'],
              NextToken: nextToken,
            }),
          );
        } catch (cause) {
          throw new AlarmLookupError(
            chunk,
            `DescribeAlarms failed: ${cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)}`,
            { cause, retryable: isThrottling(cause) },
          );
        }
        const alarms: (CompositeAlarm | MetricAlarm)[] = [
          ...(out.CompositeAlarms ?? []),
          ...(out.MetricAlarms ?? []),
        ];
        for (const a of alarms) {
          if (!a.AlarmName) continue;
          found.set(a.AlarmName, {
            name: a.AlarmName,
            state: (a.StateValue ?? 'INSUFFICIENT_DATA') as AlarmState['state'],
            reason: a.StateReason,
            rule: 'AlarmRule' in a ? a.AlarmRule : undefined,
          });
        }
        nextToken = out.NextToken;
      } while (nextToken);
    }
    return found;
  }
}
