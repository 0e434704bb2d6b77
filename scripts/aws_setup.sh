#!/usr/bin/env bash
# One-time AWS setup for cluster.yaml (run locally with admin credentials):
#   scripts/aws_setup.sh BUCKET SSH_CIDR [REGION]
# e.g. scripts/aws_setup.sh my-clnscl-bucket 203.0.113.7/32 us-west-2
#
# Creates (idempotently) the S3 bucket, two least-privilege instance profiles
# (clnscl-head: the bucket + what Ray's autoscaler needs to launch/end its own nodes and
# pass the worker role; clnscl-worker: the bucket only) and a security group that allows
# SSH from SSH_CIDR only and all traffic between the cluster's nodes. Prints the lines to
# put into cluster.yaml. Never opens anything to 0.0.0.0/0.
set -euo pipefail
BUCKET="${1:?usage: $0 BUCKET SSH_CIDR [REGION]}"
CIDR="${2:?usage: $0 BUCKET SSH_CIDR [REGION] (SSH_CIDR e.g. 203.0.113.7/32)}"
REGION="${3:-us-west-2}"
case "$CIDR" in 0.0.0.0/0|::/0) echo "refusing SSH from the whole internet ($CIDR)" >&2; exit 2;; esac
HERE="$(cd "$(dirname "$0")" && pwd)/aws"
ACCOUNT="$(aws sts get-caller-identity --query Account --output text)"
export AWS_DEFAULT_REGION="$REGION"

aws s3api head-bucket --bucket "$BUCKET" 2>/dev/null || {
  if [ "$REGION" = us-east-1 ]; then aws s3api create-bucket --bucket "$BUCKET"
  else aws s3api create-bucket --bucket "$BUCKET" --create-bucket-configuration "LocationConstraint=$REGION"; fi
  aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
    BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
}

render() { sed -e "s/BUCKET/$BUCKET/g" -e "s/REGION/$REGION/g" -e "s/ACCOUNT/$ACCOUNT/g" "$HERE/$1"; }
for role in head worker; do
  name="clnscl-$role"
  aws iam get-role --role-name "$name" >/dev/null 2>&1 || \
    aws iam create-role --role-name "$name" --assume-role-policy-document "file://$HERE/ec2-trust.json" >/dev/null
  aws iam put-role-policy --role-name "$name" --policy-name "$name" \
    --policy-document "$(render "$role-policy.json")"
  aws iam get-instance-profile --instance-profile-name "$name" >/dev/null 2>&1 || {
    aws iam create-instance-profile --instance-profile-name "$name" >/dev/null
    aws iam add-role-to-instance-profile --instance-profile-name "$name" --role-name "$name"
  }
done

VPC="$(aws ec2 describe-vpcs --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)"
SG="$(aws ec2 describe-security-groups --filters Name=group-name,Values=clnscl-nodes Name=vpc-id,Values="$VPC" \
      --query 'SecurityGroups[0].GroupId' --output text)"
if [ "$SG" = None ]; then
  SG="$(aws ec2 create-security-group --group-name clnscl-nodes --vpc-id "$VPC" \
        --description "clnscl Ray nodes: SSH from $CIDR, all traffic between nodes" --query GroupId --output text)"
  aws ec2 authorize-security-group-ingress --group-id "$SG" --ip-permissions \
    "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=$CIDR}]" \
    "IpProtocol=-1,UserIdGroupPairs=[{GroupId=$SG}]" >/dev/null
fi
cat <<MSG
Done. In cluster.yaml set:
  provider.region: $REGION
  every node_config: SecurityGroupIds: ["$SG"]
  head node_config:   IamInstanceProfile: {Name: clnscl-head}
  worker node_config: IamInstanceProfile: {Name: clnscl-worker}
  CHANGE-ME-clnscl-bucket -> $BUCKET
MSG
