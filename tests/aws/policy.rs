//! The IAM policies of worker/ami/iam/, as rendered by render.sh, and a
//! small evaluator: which permissions (action and resource) a recorded API
//! call needs, and whether a policy's statements allow them. Conditions
//! are not evaluated (moto enforces nothing); actions and resource
//! patterns are, the way IAM matches them (`*` and `?` across `/` and `:`).

use std::process::Command;

use imagefleet::aws::calls::Call;

use crate::support::repo_root;

/// moto's account and the tests' region.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub file: String,
    pub statements: Vec<Statement>,
}

/// One permission a call needs: an action on a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub action: String,
    pub resource: String,
}

/// `render.sh FILE FLEET` with `env` (plus region and account), or its
/// error message.
pub fn render(file: &str, fleet: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let output = Command::new(repo_root().join("worker/ami/iam/render.sh"))
        .args([file, fleet])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_REGION", REGION)
        .env("IMAGEFLEET_ACCOUNT", ACCOUNT)
        .envs(env.iter().copied())
        .output()
        .expect("run render.sh");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

impl Policy {
    pub fn load(file: &str, fleet: &str, env: &[(&str, &str)]) -> Policy {
        let text = render(file, fleet, env).unwrap_or_else(|e| panic!("{file}: {e}"));
        Policy::parse(file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Policy {
        let json: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        let list = |v: &serde_json::Value| -> Vec<String> {
            match v {
                serde_json::Value::String(s) => vec![s.clone()],
                serde_json::Value::Array(a) => {
                    a.iter().map(|s| s.as_str().unwrap().to_owned()).collect()
                }
                other => panic!("{file}: unexpected {other}"),
            }
        };
        let statements = json["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert_eq!(s["Effect"], "Allow", "{file}: only Allow statements");
                Statement {
                    sid: s["Sid"].as_str().unwrap_or("?").to_owned(),
                    actions: list(&s["Action"]),
                    resources: list(&s["Resource"]),
                }
            })
            .collect();
        Policy {
            file: file.to_owned(),
            statements,
        }
    }

    /// The statement allowing `permission`, if any.
    pub fn allowing(&self, permission: &Permission) -> Option<&Statement> {
        self.statements.iter().find(|s| {
            s.actions.iter().any(|a| {
                glob(
                    &a.to_ascii_lowercase(),
                    &permission.action.to_ascii_lowercase(),
                )
            }) && s.resources.iter().any(|r| glob(r, &permission.resource))
        })
    }

    /// Every (statement, action, resource pattern) the policy grants.
    pub fn grants(&self) -> Vec<(String, String, String)> {
        self.statements
            .iter()
            .flat_map(|s| {
                s.actions.iter().flat_map(move |a| {
                    s.resources
                        .iter()
                        .map(move |r| (s.sid.clone(), a.clone(), r.clone()))
                })
            })
            .collect()
    }

    /// Every resource pattern in the policy.
    pub fn resource_patterns(&self) -> Vec<String> {
        self.statements
            .iter()
            .flat_map(|s| s.resources.iter().cloned())
            .collect()
    }
}

/// IAM's wildcard match: `*` any run of characters, `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn permission(action: &str, resource: impl Into<String>) -> Permission {
    Permission {
        action: action.to_owned(),
        resource: resource.into(),
    }
}

pub fn sqs_arn(queue: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}")
}

pub fn group_arn(group: &str) -> String {
    format!(
        "arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/{group}"
    )
}

fn ec2_arn(kind: &str, id: &str) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{id}")
}

/// The permissions `call` needs. `group` is the fleet's Auto Scaling
/// group (SetInstanceHealth names only the instance).
pub fn permissions(call: &Call, group: &str) -> Vec<Permission> {
    let op = call.operation.as_str();
    match call.service.as_str() {
        "SQS" => {
            let json = call.json().unwrap_or_default();
            let queue = json["QueueUrl"]
                .as_str()
                .and_then(|url| url.rsplit('/').next())
                .or_else(|| json["QueueName"].as_str())
                .unwrap_or("?")
                .to_owned();
            let action = match op {
                "SendMessageBatch" => "SendMessage",
                "DeleteMessageBatch" => "DeleteMessage",
                "ChangeMessageVisibilityBatch" => "ChangeMessageVisibility",
                other => other,
            };
            if op == "ListQueues" {
                return vec![permission("sqs:ListQueues", "*")];
            }
            let mut needed = vec![permission(&format!("sqs:{action}"), sqs_arn(&queue))];
            // Tags given at creation need the tagging permission too.
            if op == "CreateQueue" && json.get("tags").is_some() {
                needed.push(permission("sqs:TagQueue", sqs_arn(&queue)));
            }
            needed
        }
        "S3" => {
            // Path-style: http://host:port/BUCKET/KEY?query
            let path = call
                .uri
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split_once('/'))
                .map(|(_, path)| path.split('?').next().unwrap_or(""))
                .unwrap_or("");
            let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
            let object = format!("arn:aws:s3:::{bucket}/{key}");
            let bucket = format!("arn:aws:s3:::{bucket}");
            match op {
                "HeadBucket" | "ListObjectsV2" | "ListObjects" => {
                    vec![permission("s3:ListBucket", bucket)]
                }
                "GetObject" | "HeadObject" => vec![permission("s3:GetObject", object)],
                // A multipart upload is PutObject to IAM, but its abort.
                "PutObject"
                | "CreateMultipartUpload"
                | "UploadPart"
                | "CompleteMultipartUpload" => vec![permission("s3:PutObject", object)],
                "AbortMultipartUpload" => vec![permission("s3:AbortMultipartUpload", object)],
                "DeleteObject" => vec![permission("s3:DeleteObject", object)],
                other => vec![permission(&format!("s3:{other}"), bucket)],
            }
        }
        "EC2" => {
            let form = call.form();
            let values = |prefix: &str| -> Vec<String> {
                form.iter()
                    .filter(|(k, _)| {
                        k == prefix
                            || k.strip_prefix(prefix)
                                .and_then(|rest| rest.strip_prefix('.'))
                                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
                    })
                    .map(|(_, v)| v.clone())
                    .collect()
            };
            match op {
                "TerminateInstances" | "DescribeInstanceAttribute" => values("InstanceId")
                    .iter()
                    .map(|id| permission(&format!("ec2:{op}"), ec2_arn("instance", id)))
                    .collect(),
                "CreateTags" => values("ResourceId")
                    .iter()
                    .map(|id| permission("ec2:CreateTags", ec2_arn("instance", id)))
                    .collect(),
                "RunInstances" => {
                    let run = |resource: String| permission("ec2:RunInstances", resource);
                    let mut needed = vec![
                        run(ec2_arn("instance", "*")),
                        run(ec2_arn("volume", "*")),
                        run(ec2_arn("network-interface", "*")),
                    ];
                    for image in values("ImageId") {
                        needed.push(run(format!("arn:aws:ec2:{REGION}::image/{image}")));
                    }
                    for subnet in values("SubnetId") {
                        needed.push(run(ec2_arn("subnet", &subnet)));
                    }
                    for group in values("SecurityGroupId") {
                        needed.push(run(ec2_arn("security-group", &group)));
                    }
                    for key in values("KeyName") {
                        needed.push(run(ec2_arn("key-pair", &key)));
                    }
                    // Tags given at launch: CreateTags on what they tag.
                    for (k, v) in &form {
                        if k.starts_with("TagSpecification.") && k.ends_with(".ResourceType") {
                            needed.push(permission("ec2:CreateTags", ec2_arn(v, "*")));
                        }
                    }
                    // An instance profile passes its role (of the same name).
                    for profile in values("IamInstanceProfile.Name") {
                        needed.push(permission(
                            "iam:PassRole",
                            format!("arn:aws:iam::{ACCOUNT}:role/{profile}"),
                        ));
                    }
                    needed
                }
                // Describe* support no resource-level permissions.
                other => vec![permission(&format!("ec2:{other}"), "*")],
            }
        }
        "Auto Scaling" => match op {
            "DescribeAutoScalingGroups" | "DescribeAutoScalingInstances" => {
                vec![permission(&format!("autoscaling:{op}"), "*")]
            }
            "SetInstanceHealth" => vec![permission(
                "autoscaling:SetInstanceHealth",
                group_arn(group),
            )],
            other => vec![permission(
                &format!("autoscaling:{other}"),
                group_arn(&call.param("AutoScalingGroupName").unwrap_or_default()),
            )],
        },
        other => panic!("a call to an unexpected service {other}: {call:?}"),
    }
}

#[test]
fn globs_match_as_iam_does() {
    assert!(glob(
        "arn:aws:sqs:*:1:imagefleet-demo-reply_*",
        "arn:aws:sqs:r:1:imagefleet-demo-reply_ab"
    ));
    assert!(!glob(
        "arn:aws:sqs:*:1:imagefleet-demo-reply_*",
        "arn:aws:sqs:r:1:imagefleet-demo-reply-x"
    ));
    assert!(glob("a?c*", "abcdef"));
    assert!(!glob("abc", "abcd"));
    assert!(glob("*", ""));
    assert!(glob("x/*", "x/*"));
}
