import Foundation

/// How the embedded default trains its `arith` teacher from scratch: the task levels it trains
/// and is scored on, the model `rqat init` writes, and the `rqat sft` settings. The values of
/// `embedded` are the ones measured in docs/ACCURACY.md ("The embedded teacher: what was
/// tried"); the pipeline reads them from here (or from a config that overrides them).
package struct ArithTeacherRecipe: Codable, Sendable, Equatable {
    /// The training curriculum: problems are drawn from these levels in turn.
    package var trainLevels: [ArithLevel]
    /// The level validation and test problems are drawn from.
    package var evalLevel: ArithLevel
    /// Distinct training problems (train split, seed `dataSeed`).
    package var trainProblems: Int
    package var dataSeed: UInt64

    /// `rqat init` settings.
    package var arch: String
    package var hidden: Int
    package var layers: Int
    package var heads: Int
    package var kvHeads: Int
    package var intermediate: Int
    package var maxPositions: Int
    package var initSeed: UInt64

    /// `rqat sft` settings (plain format: prompt then completion then EOS).
    package var steps: Int
    package var batchTokens: Int
    package var seqLen: Int
    package var packing: Bool
    /// Train on the whole text (question included) rather than the completion only.
    package var fullTextLoss: Bool
    package var lr: Double
    package var warmup: Int
    package var minLRRatio: Double
    package var weightDecay: Double
    package var trainSeed: UInt64

    /// Greedy decoding needs no more than this for the eval level (4 steps of at most 7 tokens,
    /// the answer line and EOS).
    package var maxNewTokens: Int

    enum CodingKeys: String, CodingKey {
        case trainLevels = "train_levels", evalLevel = "eval_level", trainProblems = "train_problems", dataSeed = "data_seed"
        case arch, hidden, layers, heads, kvHeads = "kv_heads", intermediate, maxPositions = "max_positions", initSeed = "init_seed"
        case steps, batchTokens = "batch_tokens", seqLen = "seq_len", packing, fullTextLoss = "full_text_loss", lr, warmup
        case minLRRatio = "min_lr_ratio", weightDecay = "weight_decay", trainSeed = "train_seed", maxNewTokens = "max_new_tokens"
    }

    /// The task the teacher is trained on (its curriculum) and the one it is scored on.
    package var trainTask: ArithTask { ArithTask(levels: trainLevels) }
    package var evalTask: ArithTask { ArithTask(levels: [evalLevel]) }

    /// Tokens the training run reads (padding included), for budgeting.
    package var trainTokens: Int { steps * batchTokens }
}

extension ArithTeacherRecipe {
    /// The embedded default: a 4-block Llama of hidden size 32 (2 heads of 16, MLP 128: 77k
    /// parameters with its tied 364-token embedding) trained on a curriculum of one-step
    /// problems and the scored level (2-4 steps, one-digit operands, + and -), 1600 steps of 32
    /// unpacked rows of 80 tokens (4.1M tokens with the padding), completion-only loss, lr 3e-3
    /// after 60 warm-up steps, cosine to 0.1 of it. Measured (2 threads, loaded machine, 7m17s):
    /// 97.2% of 500 test problems greedy, 95.5% sampled (T 0.6, top-p 0.95, 3 seeds); RTN
    /// W2G64 keeps 6% of 300 validation problems, RTN W3G128 65%, GPTQ W3G128 93%, GPTQ W2G64 37%.
    ///
    /// Small on purpose: larger or longer-trained teachers solve the task as well but shrug off
    /// quantization (hidden 128: GPTQ W2G64 lost nothing), which would leave KD no gap to close;
    /// 1200 steps leave wider gaps but a teacher at 86% whose accuracy moved 4 points with the
    /// thread count. See docs/ACCURACY.md ("The embedded teacher: what was tried").
    package static let embedded = ArithTeacherRecipe(
        trainLevels: [ArithLevel(minSteps: 1, maxSteps: 1), ArithTask.defaultLevel, ArithTask.defaultLevel],
        evalLevel: ArithTask.defaultLevel,
        trainProblems: 100_000, dataSeed: 1,
        arch: "llama", hidden: 32, layers: 4, heads: 2, kvHeads: 2, intermediate: 128, maxPositions: 256, initSeed: 0,
        steps: 1600, batchTokens: 2560, seqLen: 80, packing: false, fullTextLoss: false,
        lr: 3e-3, warmup: 60, minLRRatio: 0.1, weightDecay: 0.01, trainSeed: 0,
        maxNewTokens: 48)
}
