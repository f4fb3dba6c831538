import Tensors

package struct GenerationRequest: Sendable {
    package var prompt: [Int]
    package var maxNewTokens: Int
    package var sampling: SamplingParams
    package init(prompt: [Int], maxNewTokens: Int, sampling: SamplingParams = .greedy) {
        self.prompt = prompt
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
    }
}

package struct GenerationResult: Sendable {
    package enum Finish: String, Sendable, Codable { case eos, length }
    package var tokens: [Int]
    /// Log-probability of each generated token (see `Sampler`).
    package var logprobs: [Float]
    package var finish: Finish

    package init(tokens: [Int], logprobs: [Float], finish: Finish) {
        self.tokens = tokens
        self.logprobs = logprobs
        self.finish = finish
    }
}

/// Batched generation: prompts are prefilled, then every running sequence advances one token
/// per step in a shared forward; a sequence leaves the batch at its own stop token or length
/// limit. With `maxBatch` below the number of requests, at most that many run at once and a
/// waiting request takes the place of one that finished (continuous batching: its prompt is
/// prefilled in the same forward as the others' next tokens), in request order, so the result
/// depends only on the requests and `maxBatch`.
///
/// A token prefix that every prompt starts with (a chat template's system turn, a task's
/// instruction) is prefilled once, and each sequence's cache starts as a copy of it: an eval's
/// prompts share about half their tokens, and prefill costs as much per token as decoding a
/// full batch. Keys and values of the prefix then come from a forward of the prefix alone, so
/// they round as they would for a prompt run by itself.
package final class Generator {
    package let decoder: Decoder
    package let stopTokens: Set<Int>

    package init(decoder: Decoder, stopTokens: Set<Int>) {
        self.decoder = decoder
        self.stopTokens = stopTokens
    }

    /// `onToken(request index, token)` is called as each token is chosen (for streaming),
    /// `onFinish(request index, result)` as each sequence ends.
    package func generate(_ requests: [GenerationRequest], maxBatch: Int? = nil,
                         onToken: ((Int, Int) -> Void)? = nil,
                         onFinish: ((Int, GenerationResult) -> Void)? = nil) -> [GenerationResult] {
        precondition(requests.allSatisfy { !$0.prompt.isEmpty }, "every prompt needs at least one token")
        var results = requests.map { _ in GenerationResult(tokens: [], logprobs: [], finish: .length) }
        var waiting = requests.indices.filter { requests[$0].maxNewTokens > 0 }
        for r in requests.indices where requests[r].maxNewTokens <= 0 { onFinish?(r, results[r]) }
        guard !waiting.isEmpty else { return results }
        let slots = min(max(1, maxBatch ?? waiting.count), waiting.count)
        let capacity = { (r: Int) in requests[r].prompt.count + requests[r].maxNewTokens }
        // All at once: slot i holds the i-th request exactly; otherwise every slot fits the longest.
        let cache = decoder.makeCache(capacities: slots == waiting.count
            ? waiting.map(capacity) : Array(repeating: waiting.map(capacity).max()!, count: slots))
        var samplers = requests.map { Sampler($0.sampling) }
        let v = decoder.config.vocabSize
        let shared = waiting.count > 1 ? Self.sharedPrefix(waiting.map { requests[$0].prompt }) : 0
        var prefix: KVCache?
        if shared >= Self.minimumSharedPrefix {
            let p = decoder.makeCache(capacities: [shared])
            _ = decoder.forward([SequenceChunk(sequence: 0, tokens: Array(requests[waiting[0]].prompt.prefix(shared)))], cache: p)
            prefix = p
        }

        // running: (request, cache slot) in the order of their rows in the next forward.
        var running: [(request: Int, slot: Int)] = []
        var freeSlots = Array(0..<slots)
        while !waiting.isEmpty || !running.isEmpty {
            // Every running sequence feeds its last token; free slots take waiting prompts.
            var chunks = running.map { SequenceChunk(sequence: $0.slot, tokens: [results[$0.request].tokens.last!]) }
            while !freeSlots.isEmpty && !waiting.isEmpty {
                let r = waiting.removeFirst(), slot = freeSlots.removeFirst()
                running.append((r, slot))
                if let prefix {
                    cache.startAsCopy(sequence: slot, of: prefix, sequence: 0, count: shared)
                    chunks.append(SequenceChunk(sequence: slot, tokens: Array(requests[r].prompt[shared...])))
                } else {
                    cache.reset(sequence: slot)
                    chunks.append(SequenceChunk(sequence: slot, tokens: requests[r].prompt))
                }
            }
            let logits = decoder.forward(chunks, cache: cache)
            // Each sequence has its own sampler, so rows can be drawn on all threads at once
            // (a softmax over the vocabulary per row is not small beside a decode step).
            var drawn = [(token: Int, logprob: Float)](repeating: (0, 0), count: running.count)
            samplers.withUnsafeMutableBufferPointer { samplers in
                drawn.withUnsafeMutableBufferPointer { drawn in
                    Threads.parallelFor(running.count) { rows in
                        for row in rows { drawn[row] = samplers[running[row].request].sample(logits.row(row), count: v) }
                    }
                }
            }
            var stillRunning: [(request: Int, slot: Int)] = []
            for (row, entry) in running.enumerated() {
                let s = entry.request
                let (token, logprob) = drawn[row]
                results[s].tokens.append(token)
                results[s].logprobs.append(logprob)
                onToken?(s, token)
                if stopTokens.contains(token) {
                    results[s].finish = .eos
                } else if results[s].tokens.count < requests[s].maxNewTokens {
                    stillRunning.append(entry)
                    continue
                }
                freeSlots.append(entry.slot)
                onFinish?(s, results[s])
            }
            running = stillRunning
        }
        return results
    }

    /// Shorter common prefixes are not worth a forward of their own.
    static let minimumSharedPrefix = 16

    /// The length of the longest token prefix all prompts start with, short of the shortest
    /// prompt's last token (each sequence's first logits come from a chunk of its own).
    package static func sharedPrefix(_ prompts: [[Int]]) -> Int {
        guard var length = prompts.map({ $0.count - 1 }).min(), let first = prompts.first else { return 0 }
        for prompt in prompts.dropFirst() {
            var i = 0
            while i < length && prompt[i] == first[i] { i += 1 }
            length = i
        }
        return max(0, length)
    }
}
