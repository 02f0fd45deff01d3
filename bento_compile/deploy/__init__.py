"""Deploy: put a Bento live on a function platform, with versions, a weighted canary, promotion and rollback.

`aws_lambda` is the AWS Lambda deployer; the small modules beside it each do one job
(AWS clients and their errors, waiting and retrying, the execution role, the upload,
the smoke check, the alias and its history).
"""
