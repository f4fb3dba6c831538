import Foundation
import Formats
import Tensors

// MARK: - Examples

/// One tokenised training example: prompt tokens, then completion tokens.
package struct SFTExample: Equatable, Sendable {
    package var tokens: [Int]
    /// The first `promptLength` tokens are the prompt (never trained on); the rest the completion.
    package var promptLength: Int
    /// 1-based line of the JSONL file it came from, for messages.
    package var line: Int

    package init(tokens: [Int], promptLength: Int, line: Int) {
        precondition(promptLength >= 0 && promptLength <= tokens.count, "prompt longer than the example")
        self.tokens = tokens
        self.promptLength = promptLength
        self.line = line
    }
}

/// How a prompt/completion pair becomes text.
package enum SFTFormat: String, Codable, Sendable {
    /// The prompt as one user message in the chat template plus the assistant generation prompt;
    /// the completion followed by `<|im_end|>`, so the model learns to end its turn.
    case chat
    /// Prompt and completion back to back, then the tokenizer's EOS id if it has one.
    case plain
}

/// A supervised fine-tuning set read from JSONL, one `{"prompt": ..., "completion": ...}` object
/// per line (blank lines are skipped; other keys are ignored).
///
/// Prompt and completion are tokenised separately and concatenated, so the boundary between
/// them is exact (tokenising the joined text could merge a token across it).
package struct SFTDataset: Sendable {
    package let path: String
    package let examples: [SFTExample]
    /// Lines skipped because the example was longer than the context (with `dropLong`).
    package let droppedLines: [Int]

    package init(path: String, examples: [SFTExample], droppedLines: [Int] = []) {
        self.path = path
        self.examples = examples
        self.droppedLines = droppedLines
    }

    /// The end-of-turn marker appended to chat completions.
    package static let endOfTurn = "<|im_end|>"

    /// Reads and tokenises `url`. Every example must fit the context of `seqLen` tokens: a longer
    /// one is an error unless `dropLong`, which skips it (the skipped lines are in `droppedLines`).
    package static func load(_ url: URL, tokenizer: BPETokenizer, format: SFTFormat,
                            template: ChatTemplate = .chatML, seqLen: Int, dropLong: Bool = false) throws -> SFTDataset {
        let path = url.path
        guard let data = try? Data(contentsOf: url) else { throw FormatError(path, "cannot read the dataset") }
        if format == .chat && tokenizer.id(of: endOfTurn) == nil {
            throw FormatError(path, "chat format needs the tokenizer to have the \(endOfTurn) token; use the plain format for this model")
        }
        var examples: [SFTExample] = []
        var dropped: [Int] = []
        var lineNumber = 0
        for rawLine in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.last == UInt8(ascii: "\r") ? rawLine.dropLast() : rawLine
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            let (prompt, completion) = try parse(Data(line), line: lineNumber, path: path, format: format)
            let example = tokenize(prompt: prompt, completion: completion, line: lineNumber,
                                   tokenizer: tokenizer, format: format, template: template)
            if example.tokens.count > seqLen {
                if dropLong { dropped.append(lineNumber); continue }
                throw FormatError(path, "line \(lineNumber): the example is \(example.tokens.count) tokens (prompt \(example.promptLength) + completion \(example.tokens.count - example.promptLength)), longer than the context of \(seqLen); raise --seq-len to at least \(example.tokens.count) or pass --drop-long to skip such examples")
            }
            examples.append(example)
        }
        if examples.isEmpty {
            throw FormatError(path, dropped.isEmpty
                ? "no examples: the file has no JSON lines"
                : "no examples left: all \(dropped.count) are longer than the context of \(seqLen) tokens; raise --seq-len")
        }
        return SFTDataset(path: path, examples: examples, droppedLines: dropped)
    }

    private static func parse(_ line: Data, line number: Int, path: String, format: SFTFormat) throws -> (String, String) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: line)
        } catch {
            throw FormatError(path, "line \(number): invalid JSON; each line must be one {\"prompt\": ..., \"completion\": ...} object")
        }
        guard let fields = object as? [String: Any] else {
            throw FormatError(path, "line \(number): expected a JSON object with \"prompt\" and \"completion\"")
        }
        guard let completion = fields["completion"] as? String else {
            throw FormatError(path, "line \(number): no \"completion\" string")
        }
        // Plain text may have no prompt (the whole text is trained on); a chat turn needs one.
        let prompt = fields["prompt"] as? String
        if prompt == nil && (format == .chat || fields["prompt"] != nil) {
            throw FormatError(path, "line \(number): no \"prompt\" string")
        }
        return (prompt ?? "", completion)
    }

    /// The tokens of one example (visible so tools can show what the model is trained on).
    package static func tokenize(prompt: String, completion: String, line: Int, tokenizer: BPETokenizer,
                                format: SFTFormat, template: ChatTemplate) -> SFTExample {
        switch format {
        case .chat:
            let promptText = template.prompt(prompt)
            let p = tokenizer.encode(promptText)
            let c = tokenizer.encode(completion + endOfTurn)
            return SFTExample(tokens: p + c, promptLength: p.count, line: line)
        case .plain:
            let p = tokenizer.encode(prompt)
            var c = tokenizer.encode(completion)
            if let eos = tokenizer.eosTokenId { c.append(eos) }
            return SFTExample(tokens: p + c, promptLength: p.count, line: line)
        }
    }
}

// MARK: - Batches

/// Where a data stream stands: the next example is `order(epoch)[index]`. Saved in checkpoints
/// so a resumed run sees exactly the batches the uninterrupted run would have seen.
package struct DataPosition: Codable, Equatable, Sendable {
    package var epoch: Int
    package var index: Int

    package init(epoch: Int = 0, index: Int = 0) {
        self.epoch = epoch
        self.index = index
    }
}

/// A batch of `rows` sequences of exactly `seqLen` tokens, flattened row-major.
///
/// The mask is per PREDICTION: position t of a row predicts token t+1, so `lossMask[t] = 1` iff
/// token t+1 is a completion token of the same example as token t. Hence prompt tokens, padding,
/// the first token of each packed example and the last position of every row (which predicts
/// nothing) all have mask 0. `targets[t]` is token t+1 (the pad id at a row's end), ready for
/// `CrossEntropy.forwardBackward(targets:weights:)`.
package struct SFTBatch: Equatable, Sendable {
    package let rows: Int
    package let seqLen: Int
    package var tokens: [Int]
    package var targets: [Int]
    package var lossMask: [Float]
    /// Per row, the offsets where examples start (for a future per-document attention mask).
    package var documentStarts: [[Int]]
    /// Examples in the batch and positions with mask 1 (the loss normaliser's share).
    package var exampleCount: Int
    package var predictedTokens: Int { lossMask.reduce(0) { $0 + ($1 > 0 ? 1 : 0) } }
    /// For a data-parallel shard: the predicted tokens of the whole micro-batch it was cut from.
    package var wholeBatchPredictedTokens: Int? = nil
    /// For a data-parallel shard: the index of its first row in the whole micro-batch.
    package var firstRow = 0
    /// The loss normaliser's share: the whole micro-batch's predicted tokens.
    package var globalPredictedTokens: Int { wholeBatchPredictedTokens ?? predictedTokens }
    /// Rollouts (RL): what a policy-gradient objective needs per position besides the tokens.
    /// nil for supervised data.
    package var rollout: RolloutTokens? = nil

    package init(rows: Int, seqLen: Int, tokens: [Int], targets: [Int], lossMask: [Float], documentStarts: [[Int]],
                exampleCount: Int, wholeBatchPredictedTokens: Int? = nil, firstRow: Int = 0) {
        precondition(tokens.count == rows * seqLen && targets.count == tokens.count && lossMask.count == tokens.count,
                     "a batch of \(rows) x \(seqLen) needs that many tokens, targets and mask entries")
        self.rows = rows
        self.seqLen = seqLen
        self.tokens = tokens
        self.targets = targets
        self.lossMask = lossMask
        self.documentStarts = documentStarts
        self.exampleCount = exampleCount
        self.wholeBatchPredictedTokens = wholeBatchPredictedTokens
        self.firstRow = firstRow
    }
}

/// Per position of a rollout batch (rows x seqLen, aligned with `SFTBatch.lossMask`: position t
/// predicts token t+1), what an RL objective weighs the sampled tokens by.
package struct RolloutTokens: Equatable, Sendable {
    /// The advantage of the completion the position belongs to.
    package var advantages: [Float]
    /// The loss-aggregation coefficient of the position (token-mean, seq-mean or Dr. GRPO), over
    /// the whole batch: the loss is the sum over positions of coefficient x per-token loss.
    package var coefficients: [Float]
    /// log pi(token) under the policy that sampled it, at the sampling temperature, as the
    /// sampler reported it (the behaviour policy).
    package var behaviourLogProbs: [Float]
    /// log pi_ref(token) under a reference policy, for a KL term; nil without one.
    package var referenceLogProbs: [Float]?
    /// The teacher's distribution at every position (top-k at T 1), for a KD term on the
    /// rollout tokens; nil without one.
    package var teacher: (k: Int, ids: [Int32], logProbs: [Float], tailMass: [Float])?

    package init(advantages: [Float], coefficients: [Float], behaviourLogProbs: [Float], referenceLogProbs: [Float]? = nil,
                teacher: (k: Int, ids: [Int32], logProbs: [Float], tailMass: [Float])? = nil) {
        self.advantages = advantages
        self.coefficients = coefficients
        self.behaviourLogProbs = behaviourLogProbs
        self.referenceLogProbs = referenceLogProbs
        self.teacher = teacher
    }

    package static func == (a: RolloutTokens, b: RolloutTokens) -> Bool {
        a.advantages == b.advantages && a.coefficients == b.coefficients && a.behaviourLogProbs == b.behaviourLogProbs
            && a.referenceLogProbs == b.referenceLogProbs && a.teacher?.k == b.teacher?.k && a.teacher?.ids == b.teacher?.ids
            && a.teacher?.logProbs == b.teacher?.logProbs && a.teacher?.tailMass == b.teacher?.tailMass
    }

    /// Positions `range` (a shard's rows).
    package func slice(_ range: Range<Int>) -> RolloutTokens {
        RolloutTokens(advantages: Array(advantages[range]), coefficients: Array(coefficients[range]),
                      behaviourLogProbs: Array(behaviourLogProbs[range]), referenceLogProbs: referenceLogProbs.map { Array($0[range]) },
                      teacher: teacher.map { t in
                          let wide = range.lowerBound * t.k..<range.upperBound * t.k
                          return (t.k, Array(t.ids[wide]), Array(t.logProbs[wide]), Array(t.tailMass[range]))
                      })
    }
}

/// Cuts a dataset into batches of a fixed token budget, in a shuffled order fixed by the seed.
///
/// Each batch has `batchTokens / seqLen` rows of `seqLen` tokens.
/// - Padded (`packing == false`): one example per row, the rest padded with `padId` (masked).
/// - Packed: examples go into a row one after another while they fit; one that does not fit
///   starts the next row (examples are never split, so each keeps its prompt), and the rest of
///   the row is padding. LIMITATION: attention is plain causal over the whole row, so a packed
///   example can attend to the examples before it in its row (positions also keep counting).
///   Only the loss respects document boundaries. Use padding where that matters.
///
/// Epoch e visits the examples in a permutation drawn from `SeededRNG` seeded by the seed and e;
/// the stream runs across epochs without a gap (a batch may hold the end of one epoch and the
/// start of the next).
package final class SFTBatcher: BatchSource {
    package let dataset: SFTDataset
    package let seqLen: Int
    package let rowsPerBatch: Int
    package let packing: Bool
    package let padId: Int
    package let seed: UInt64
    package private(set) var position: DataPosition
    private var order: [Int] = []
    private var orderEpoch = -1

    package init(dataset: SFTDataset, seqLen: Int, batchTokens: Int, packing: Bool, padId: Int,
                seed: UInt64, position: DataPosition = DataPosition()) throws {
        guard seqLen >= 2 else { throw TrainError("--seq-len must be at least 2 (got \(seqLen))") }
        guard batchTokens >= seqLen else {
            throw TrainError("--batch-tokens (\(batchTokens)) must be at least --seq-len (\(seqLen)): a batch holds whole rows of seq-len tokens")
        }
        guard !dataset.examples.isEmpty else { throw FormatError(dataset.path, "no examples") }
        if let long = dataset.examples.first(where: { $0.tokens.count > seqLen }) {
            throw FormatError(dataset.path, "line \(long.line): the example is \(long.tokens.count) tokens, longer than the context of \(seqLen)")
        }
        guard position.epoch >= 0, position.index >= 0, position.index <= dataset.examples.count else {
            throw TrainError("data position epoch \(position.epoch) index \(position.index) is outside the dataset of \(dataset.examples.count) examples; the checkpoint belongs to another dataset")
        }
        self.dataset = dataset
        self.seqLen = seqLen
        self.rowsPerBatch = batchTokens / seqLen
        self.packing = packing
        self.padId = padId
        self.seed = seed
        self.position = position
    }

    /// The order in which epoch `epoch` visits the examples (Fisher-Yates, written out rather than
    /// `shuffle(using:)`, whose algorithm the standard library does not promise to keep).
    package static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var rng = SeededRNG(seed: seed ^ (UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15))
        var order = Array(0..<count)
        if count < 2 { return order }
        for i in stride(from: count - 1, to: 0, by: -1) {
            // Modulo bias is below 2^-40 for any dataset that fits in memory.
            let j = Int(rng.next() % UInt64(i + 1))
            order.swapAt(i, j)
        }
        return order
    }

    /// The example at the current position, moving to the next epoch when one is used up.
    private func peek() -> SFTExample {
        if position.index == dataset.examples.count { position = DataPosition(epoch: position.epoch + 1, index: 0) }
        if orderEpoch != position.epoch {
            order = Self.permutation(count: dataset.examples.count, seed: seed, epoch: position.epoch)
            orderEpoch = position.epoch
        }
        return dataset.examples[order[position.index]]
    }

    package func nextBatch() -> SFTBatch {
        let n = rowsPerBatch * seqLen
        var tokens = [Int](repeating: padId, count: n)
        // Per token: which example (-1 for padding) and whether it is a completion token.
        var document = [Int](repeating: -1, count: n)
        var completion = [Bool](repeating: false, count: n)
        var starts = [[Int]](repeating: [], count: rowsPerBatch)
        var examples = 0
        var row = 0, offset = 0
        while row < rowsPerBatch {
            let example = peek()
            let length = example.tokens.count
            if offset > 0 && (!packing || offset + length > seqLen) {
                row += 1
                offset = 0
                continue
            }
            let base = row * seqLen + offset
            for (k, token) in example.tokens.enumerated() {
                tokens[base + k] = token
                document[base + k] = examples
                completion[base + k] = k >= example.promptLength
            }
            starts[row].append(offset)
            offset += length
            examples += 1
            position.index += 1
        }
        if position.index == dataset.examples.count { position = DataPosition(epoch: position.epoch + 1, index: 0) }

        var targets = [Int](repeating: padId, count: n)
        var mask = [Float](repeating: 0, count: n)
        for r in 0..<rowsPerBatch {
            for t in r * seqLen..<(r + 1) * seqLen - 1 {
                targets[t] = tokens[t + 1]
                if document[t] >= 0 && document[t] == document[t + 1] && completion[t + 1] { mask[t] = 1 }
            }
        }
        return SFTBatch(rows: rowsPerBatch, seqLen: seqLen, tokens: tokens, targets: targets, lossMask: mask,
                        documentStarts: starts, exampleCount: examples)
    }
}
