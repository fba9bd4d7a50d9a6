// The direct service integration's mapping templates (API Gateway → SQS SendMessage or Kinesis
// PutRecord, no Lambda in the hot path). They write the same envelope ingest-api writes and the
// drain reads — version 1, the value (and key) as {"b64": …} so any body is valid JSON:
//   {"spillway":1,"id":"<API Gateway request id>","topic":"<topic>","key":{"b64":…},
//    "traceparent":…,"tracestate":…,"received_at_ms":<request time>,"value":{"b64":…}}
// The W3C trace context headers are carried when their characters are safe inside the envelope
// (a traceparent of the version-00 shape; a tracestate of at most 512 visible ASCII characters
// other than quotes, backslashes, brackets and backticks — the pattern needs no escapes, which
// Velocity and the test's renderer would read differently); the drain checks the traceparent fully and gives an envelope
// without a valid one a trace derived from its id. Headers other than Kafka-Key and the trace
// context are not carried in this mode; use the ingest-api integration for them.
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
    // Header names reach the template as the caller wrote them: the spec's lower case, or the
    // capitalised form some HTTP/1 clients send.
    `#set($tp = $input.params().header.get('traceparent'))`,
    `#if(!$tp)#set($tp = $input.params().header.get('Traceparent'))#end`,
    `#set($ts = $input.params().header.get('tracestate'))`,
    `#if(!$ts)#set($ts = $input.params().header.get('Tracestate'))#end`,
    `#set($traceFields = '')`,
    `#if($tp && $tp.matches('^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'))`,
    `#set($traceFields = "${q('traceparent')}:\${q}$tp\${q},")`,
    `#if($ts && $ts.matches('^[ !#-Z^_a-z{|}~]{1,512}$'))#set($traceFields = "$traceFields${q('tracestate')}:\${q}$ts\${q},")#end`,
    `#end`,
    binary ? '#set($value = $input.body)' : '#set($value = $util.base64Encode($input.body))',
    `#set($envelope = "{${q('spillway')}:1,${q('id')}:\${q}$context.requestId\${q},${q('topic')}:${q(topic)},$keyField$traceFields${q('received_at_ms')}:$context.requestTimeEpoch,${q('value')}:{${q('b64')}:\${q}$value\${q}}}")`,
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

/**
 * The answer to a write the buffer refused with a 4xx, by what the refusal says (SQS answers XML,
 * Kinesis JSON; both name the error): throttling is 429 — the caller retries after Retry-After —,
 * a message too large is 413, and anything else (access, keys, a missing queue: the deployment's
 * fault, not the message's) is 503. Nothing was accepted in any of them.
 */
export function refusedTemplate(): string {
  return [
    '#set($e = $input.body)',
    "#if($e.contains('Throttl') || $e.contains('ProvisionedThroughputExceeded') || $e.contains('LimitExceeded'))",
    '#set($context.responseOverride.status = 429)',
    '{"error_code":42900,"message":"the buffer is throttling writes; nothing was accepted: retry after Retry-After seconds"}',
    "#elseif($e.contains('shorter than') || $e.contains('length less than or equal'))",
    '#set($context.responseOverride.status = 413)',
    '{"error_code":41300,"message":"too large for the buffer (an SQS message is at most 262,144 bytes, a Kinesis record 1,048,576; the body is base64-encoded inside the envelope); nothing was accepted"}',
    '#else',
    '#set($context.responseOverride.status = 503)',
    '{"error_code":50300,"message":"the buffer refused the write; nothing was accepted: retry"}',
    '#end',
  ].join('');
}

