import * as iam from 'aws-cdk-lib/aws-iam';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { DEFAULT_SSM_PREFIX } from '../../lambdas/core/config';
import { parameterNames } from '../../lambdas/ports/parameters';

/** The V2 read-traffic percentage at deployment: all reads from V1. */
export const INITIAL_TRAFFIC_PERCENTAGE = '0';
/** Dual-write at deployment: off (phase 2 turns it on). */
export const INITIAL_DUAL_WRITE = 'off';
/** The write primary at deployment: V1 (the write switch, after the cutover, makes it V2). */
export const INITIAL_WRITE_PRIMARY = 'v1';

/** Props of the TrafficSwitch. */
export interface TrafficSwitchProps {
  /**
   * The prefix of the parameter names (`<prefix>/v2-traffic-percentage`, `<prefix>/dual-write`,
   * `<prefix>/write-primary`).
   * @default DEFAULT_SSM_PREFIX ('/iot-migration')
   */
  readonly prefix?: string;
}

/**
 * The runtime switches the IoT backend reads: the V2 read-traffic percentage (an integer 0–100
 * as a string), dual-write (`on`/`off`: whether writes are mirrored to the other side) and the
 * write primary (`v1`/`v2`: which side writes go to first), as SSM String parameters. SSM refuses any other
 * value (allowedPattern), so a typo in the console cannot reach the backend.
 */
export class TrafficSwitch extends Construct {
  /** `<prefix>/v2-traffic-percentage`, initially '0'. */
  public readonly trafficPercentage: ssm.StringParameter;
  /** `<prefix>/dual-write`, initially 'off'. */
  public readonly dualWrite: ssm.StringParameter;
  /** `<prefix>/write-primary`, initially 'v1'. */
  public readonly writePrimary: ssm.StringParameter;
  /** The parameters' names, as the backend and the handlers spell them (lambdas/ports/parameters). */
  public readonly names: ReturnType<typeof parameterNames>;

  constructor(scope: Construct, id: string, props: TrafficSwitchProps = {}) {
    super(scope, id);
    const prefix = props.prefix ?? DEFAULT_SSM_PREFIX;
    if (!/^(\/[A-Za-z0-9_.-]+)+$/.test(prefix)) {
      throw new Error(`${this.node.path}: prefix must look like /name or /a/b (got "${prefix}")`);
    }
    this.names = parameterNames(prefix);
    this.trafficPercentage = new ssm.StringParameter(this, 'TrafficPercentage', {
      parameterName: this.names.trafficPercentage,
      stringValue: INITIAL_TRAFFIC_PERCENTAGE,
      allowedPattern: '^(100|[1-9]?[0-9])$',
      description: 'Percentage (0-100) of reads the IoT backend sends to the V2 schema',
      tier: ssm.ParameterTier.STANDARD,
    });
    this.dualWrite = new ssm.StringParameter(this, 'DualWrite', {
      parameterName: this.names.dualWrite,
      stringValue: INITIAL_DUAL_WRITE,
      allowedPattern: '^(on|off)$',
      description: 'Whether the IoT backend mirrors each write to the other schema (on/off)',
      tier: ssm.ParameterTier.STANDARD,
    });
    this.writePrimary = new ssm.StringParameter(this, 'WritePrimary', {
      parameterName: this.names.writePrimary,
      stringValue: INITIAL_WRITE_PRIMARY,
      allowedPattern: '^(v1|v2)$',
      description: 'Which schema the IoT backend writes first (v1 until the write switch, then v2)',
      tier: ssm.ParameterTier.STANDARD,
    });
  }

  /** The three parameters' ARNs, exactly. */
  public get parameterArns(): string[] {
    return [this.trafficPercentage.parameterArn, this.dualWrite.parameterArn, this.writePrimary.parameterArn];
  }

  /** Lets `grantee` (e.g. the backend's role) read the three parameters, and nothing else. */
  public grantRead(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['ssm:GetParameter', 'ssm:GetParameters'],
      resourceArns: this.parameterArns,
    });
  }

  /** Lets `grantee` (the orchestrator) read and change the three parameters, and nothing else. */
  public grantWrite(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['ssm:GetParameter', 'ssm:GetParameters', 'ssm:PutParameter'],
      resourceArns: this.parameterArns,
    });
  }
}
