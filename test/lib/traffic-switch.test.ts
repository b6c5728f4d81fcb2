import { Match, Template } from 'aws-cdk-lib/assertions';
import * as iam from 'aws-cdk-lib/aws-iam';
import { TrafficSwitch } from '../../lib/constructs/traffic-switch';
import { networkStack } from './helpers';

function setup(prefix?: string) {
  const { stack } = networkStack();
  const trafficSwitch = new TrafficSwitch(stack, 'TrafficSwitch', { prefix });
  const backend = new iam.Role(stack, 'BackendRole', {
    assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
  });
  return { stack, trafficSwitch, backend };
}

/** The ARN CloudFormation builds for a parameter: its name (the Ref) already starts with a slash. */
const parameterArn = (name: string) => ({
  'Fn::Join': [
    '',
    [
      'arn:',
      { Ref: 'AWS::Partition' },
      ':ssm:',
      { Ref: 'AWS::Region' },
      ':',
      { Ref: 'AWS::AccountId' },
      ':parameter',
      { Ref: Match.stringLikeRegexp(name) },
    ],
  ],
});

describe('TrafficSwitch', () => {
  it('creates the traffic percentage at 0, dual-write off and the write primary v1, under the prefix', () => {
    const template = Template.fromStack(setup('/prod/iot').stack);

    template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/prod/iot/v2-traffic-percentage',
      Type: 'String',
      Value: '0',
      AllowedPattern: '^(100|[1-9]?[0-9])$',
    });
    template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/prod/iot/dual-write',
      Type: 'String',
      Value: 'off',
      AllowedPattern: '^(on|off)$',
    });
    template.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/prod/iot/write-primary',
      Type: 'String',
      Value: 'v1',
      AllowedPattern: '^(v1|v2)$',
    });
  });

  it('grants read on exactly the three parameter ARNs', () => {
    const { stack, trafficSwitch, backend } = setup();
    trafficSwitch.grantRead(backend);
    const template = Template.fromStack(stack);

    template.hasResourceProperties('AWS::IAM::Policy', {
      Roles: [{ Ref: Match.stringLikeRegexp('^BackendRole') }],
      PolicyDocument: {
        Statement: [
          {
            Effect: 'Allow',
            Action: ['ssm:GetParameter', 'ssm:GetParameters'],
            Resource: [
              parameterArn('^TrafficSwitchTrafficPercentage'),
              parameterArn('^TrafficSwitchDualWrite'),
              parameterArn('^TrafficSwitchWritePrimary'),
            ],
          },
        ],
      },
    });
  });

  it('grants write (and read) on exactly the three parameter ARNs', () => {
    const { stack, trafficSwitch, backend } = setup();
    trafficSwitch.grantWrite(backend);

    Template.fromStack(stack).hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: [
          Match.objectLike({
            Action: ['ssm:GetParameter', 'ssm:GetParameters', 'ssm:PutParameter'],
            Resource: [
              parameterArn('^TrafficSwitchTrafficPercentage'),
              parameterArn('^TrafficSwitchDualWrite'),
              parameterArn('^TrafficSwitchWritePrimary'),
            ],
          }),
        ],
      },
    });
  });

  it('refuses a malformed prefix, naming the field and path', () => {
    expect(() => setup('iot-migration/')).toThrow(/TestStack\/TrafficSwitch: prefix must look like/);
  });
});
