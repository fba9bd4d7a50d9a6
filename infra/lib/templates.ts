// The direct service integration's mapping templates (API Gateway → SQS SendMessage or Kinesis
// PutRecord, no Lambda in the hot path). They write the same envelope ingest-api writes and the
// drain reads — version 1, the value (and key) as {"b64": …} so any body is valid JSON:
//   {"spillway":1,"id":"<API Gateway request id>","topic":"<topic>","key":{"b64":…},
//    "received_at_ms":<request time>,"value":{"b64":…}}
// Headers other than Kafka-Key and idempotency keys are not carried in this mode; use the
// ingest-api integration for them.
//
// Each template is one line of VTL directives, so that nothing but the request body is output
// (an SQS form body must start with `Action=`).

/** VTL that sets `$envelope` for `topic`; `binary`: the body arrives base64-encoded already. */
export function envelopeVtl(topic: string, binary: boolean): string {
  const q = (name: string) => '${q}' + name + '${q}';
  return [
    `#set($q = '"')`,
    `#set($key = $input.params().header.get('Kafka-Key'))`,
    `#set($keyField = '')`,
    `#if($key && $key != '')#set($keyField = "${q('key')}:{${q('b64')}:\${q}$util.base64Encode($key)\${q}},")#end`,
    binary ? '#set($value = $input.body)' : '#set($value = $util.base64Encode($input.body))',
    `#set($envelope = "{${q('spillway')}:1,${q('id')}:\${q}$context.requestId\${q},${q('topic')}:${q(topic)},$keyField${q('received_at_ms')}:$context.requestTimeEpoch,${q('value')}:{${q('b64')}:\${q}$value\${q}}}")`,
  ].join('');
}

/** SQS `SendMessage` (query protocol, form-encoded). */
export function sqsTemplate(topic: string, binary: boolean): string {
  return envelopeVtl(topic, binary) + 'Action=SendMessage&MessageBody=$util.urlEncode($envelope)';
}

/** Kinesis `PutRecord` (JSON); the request id is the partition key. */
export function kinesisTemplate(topic: string, stream: string, binary: boolean): string {
  return (
    envelopeVtl(topic, binary) +
    `{"StreamName":"${stream}","PartitionKey":"$context.requestId","Data":"$util.base64Encode($envelope)"}`
  );
}

/** The 202 the caller gets, as ingest-api answers. */
export function acceptedTemplate(topic: string): string {
  return `{"id":"$context.requestId","topic":"${topic}"}`;
}
