import Foundation
import Formats
import Model
import Quant
import Tensors

/// Calibration data for PTQ: a text file (one sequence per line) or JSONL with a "text" field.
package enum CalibrationText {
    /// Windows shorter than this carry too little context to say anything about a layer's inputs.
    package static let minimumWindow = 16

    /// The tokens of every line / "text" record, each followed by EOS, concatenated and cut into
    /// consecutive windows of `seqLen` tokens; the first `samples` windows of at least
    /// `minimumWindow` tokens. Reading stops once enough tokens are there.
    package static func windows(path: String, tokenizer: BPETokenizer, seqLen: Int, samples: Int) throws -> [[Int]] {
        let lines = try TextRecords.lines(of: path, what: "calibration file")
        var stream: [Int] = []
        // Records are parsed as they are used: reading stops once there are enough tokens.
        for (i, line) in lines.enumerated() {
            let text = path.hasSuffix(".jsonl") ? try TextRecords.field("text", of: line, number: i + 1, in: path) : line
            stream += tokenizer.encode(text)
            if let eos = tokenizer.eosTokenId { stream.append(eos) }
            if stream.count >= seqLen * samples { break }
        }
        var windows: [[Int]] = []
        var start = 0
        while start < stream.count && windows.count < samples {
            let window = Array(stream[start..<min(start + seqLen, stream.count)])
            if window.count >= minimumWindow { windows.append(window) }
            start += seqLen
        }
        return windows
    }
}

/// What `rqat ptq` did, written to OUT/ptq-report.json next to the quantized checkpoint: every
/// matrix's relative output error on the calibration windows and their sum, the figure the
/// PTQ table (scripts/ptq-table.sh, docs/ACCURACY.md) compares methods by.
package struct PTQReport: Codable, Equatable, Sendable {
    package struct Matrix: Codable, Equatable, Sendable {
        package var name: String
        /// ||W X - Q(W) X|| / ||W X||; nil without calibration data.
        package var relativeOutputError: Double?

        enum CodingKeys: String, CodingKey {
            case name
            case relativeOutputError = "relative_output_error"
        }
    }

    package var model: String
    package var scheme: String
    package var method: String
    package var clipSearch: Bool
    package var actOrder: Bool
    package var dampPercent: Double
    package var calibration: String?
    package var calibrationWindows: Int
    package var seqLen: Int
    package var matrices: [Matrix]
    /// nil when any matrix has no error (no calibration data).
    package var sumRelativeOutputError: Double?
    /// Outliers of every block linear's input on the calibration windows, in full precision
    /// (nil without calibration data).
    package var activationOutliers: [SiteOutliers]?
    /// The same after the transform (`--method quarot` or `flatquant`).
    package var rotatedActivationOutliers: [SiteOutliers]?
    /// FlatQuant's calibration, block by block (`--method flatquant`).
    package var flatQuantBlocks: [FlatQuant.BlockReport]?
    package var seconds: Double

    enum CodingKeys: String, CodingKey {
        case model, scheme, method, calibration, matrices, seconds
        case clipSearch = "clip_search"
        case actOrder = "act_order"
        case dampPercent = "damp_percent"
        case calibrationWindows = "calibration_windows"
        case seqLen = "seq_len"
        case sumRelativeOutputError = "sum_relative_output_error"
        case activationOutliers = "activation_outliers"
        case rotatedActivationOutliers = "rotated_activation_outliers"
        case flatQuantBlocks = "flatquant_blocks"
    }

    package static func url(out: URL) -> URL { out.appendingPathComponent("ptq-report.json") }

    package static func read(out: URL) throws -> PTQReport {
        try JobJSON.read(PTQReport.self, from: url(out: out), missing: "run `rqat ptq --out \(out.path)` first")
    }
}

/// Post-training quantization (`rqat ptq`): RTN or GPTQ of the decoder-block linears of
/// `model`, saved in the GPTQ packed format to `out`, with `PTQReport` in OUT/ptq-report.json.
package struct PTQJob {
    package var model: String
    package var scheme: QuantScheme
    package var method: PTQMethod
    package var calibration: String?
    package var calibrationSamples: Int
    package var seqLen: Int
    /// MSE clip search for the group ranges.
    package var clip: Bool
    package var actOrder: Bool
    package var damp: Double
    /// The output directory as the user wrote it (progress lines repeat it verbatim).
    package var out: String
    /// A transform of the FP model before its weights are quantized by `method`; the checkpoint
    /// records the online part. nil: none.
    package var transform: PTQTransform?
    /// FlatQuant's calibration (windows of `seqLen` tokens; samples from `calibrationSamples`).
    package var flatQuant = FlatQuant.Settings.cpuDefault

    package init(model: String, scheme: QuantScheme, method: PTQMethod, calibration: String?, calibrationSamples: Int,
                 seqLen: Int, clip: Bool, actOrder: Bool, damp: Double, out: String) {
        self.model = model
        self.scheme = scheme
        self.method = method
        self.calibration = calibration
        self.calibrationSamples = calibrationSamples
        self.seqLen = seqLen
        self.clip = clip
        self.actOrder = actOrder
        self.damp = damp
        self.out = out
    }

    package func run(log: (String) -> Void) throws -> PTQReport {
        guard scheme.weightBits != nil else { throw JobError("ptq quantizes weights: the scheme needs w<bits>") }
        let lm = try LanguageModel(checkpoint: try Checkpoint.open(model))

        var windows: [[Int]] = []
        if let calibration {
            windows = try CalibrationText.windows(path: calibration, tokenizer: lm.tokenizer, seqLen: seqLen, samples: calibrationSamples)
            guard !windows.isEmpty else {
                throw FormatError(calibration, "no usable calibration sequence (need at least \(CalibrationText.minimumWindow) tokens of text)")
            }
            log("ptq: \(windows.count) calibration windows of up to \(seqLen) tokens from \(calibration)")
        }
        func measureOutliers(_ decoder: Decoder, _ what: String) -> [SiteOutliers]? {
            guard !windows.isEmpty else { return nil }
            let outliers = OutlierStats.measure(decoder: decoder, windows: windows)
            if let worst = outliers.max(by: { $0.maxToMedian < $1.maxToMedian }) {
                let heaviest = outliers.max { $0.kurtosis < $1.kurtosis }!
                log(String(format: "ptq: activation outliers %@ on the calibration windows: largest channel / median channel %.1f (layer %d %@), kurtosis up to %.1f (layer %d %@): %@",
                           what, worst.maxToMedian, worst.layer, worst.site, heaviest.kurtosis, heaviest.layer, heaviest.site,
                           worst.maxToMedian > OutlierStats.massiveRatio ? "massive activations (above 100x)" : "no massive activations (none above 100x)"))
            }
            return outliers
        }
        let step = transform == .flatquant ? "FlatQuant's transforms" : "the rotation"
        let outliers = measureOutliers(lm.decoder, transform == nil ? "of the model" : "before \(step)")
        var decoder = lm.decoder
        var rotation: RotationSpec?
        var rotatedOutliers: [SiteOutliers]?
        var extraTensors: [String: Tensor] = [:]
        var rowShrinks: [String: [Float]] = [:]
        var flatQuantReports: [FlatQuant.BlockReport]?
        if let transform {
            switch transform {
            case .quarot:
                let weights = try QuaRot.rotate(lm.decoder.weights, seed: 0)
                // Queries and keys per head after RoPE: the cached keys are quantized rotated.
                let headRotation = try HadamardTransform(size: lm.config.headDim)
                for layer in weights.layers { layer.headRotation = headRotation }
                decoder = Decoder(weights: weights)
                rotation = RotationSpec(method: transform.rawValue, seed: 0, onlineDownHadamard: true, onlineQKHadamard: true)
            case .flatquant:
                let sequences = windows.filter { $0.count == seqLen }
                guard !sequences.isEmpty else {
                    throw JobError("--method flatquant calibrates on windows of --seq-len \(seqLen) tokens: \(calibration ?? "no --calib") has none; give --calib or a smaller --seq-len")
                }
                var settings = flatQuant
                settings.samples = sequences.count
                settings.length = seqLen
                log("ptq: FlatQuant calibration on \(sequences.count) windows of \(seqLen) tokens, \(settings.epochs) epochs")
                let (blocks, reports) = try FlatQuant.calibrate(config: lm.config, source: lm.checkpoint.weights, sequences: sequences,
                                                                scheme: scheme, settings: settings, log: log)
                decoder = Decoder(weights: try FlatQuant.transformedWeights(lm.decoder.weights, blocks: blocks))
                for block in blocks {
                    extraTensors.merge(block.savedTensors) { $1 }
                    rowShrinks.merge(block.weightClipRatios(lm.config)) { $1 }
                }
                rotation = RotationSpec(method: transform.rawValue, seed: 0, onlineDownHadamard: false)
                flatQuantReports = reports
                if method == .gptq { log("ptq: GPTQ sets every row's grid itself; FlatQuant's learned weight clips are not used") }
            }
            rotatedOutliers = measureOutliers(decoder, "after \(step)")
        }
        let methodName = transform.map { "\($0.rawValue)+\(method.rawValue)" } ?? method.rawValue
        var options = PTQOptions(scheme: scheme, method: method, clipSearch: clip && rowShrinks.isEmpty ? .gptq : nil)
        options.rowShrinks = rowShrinks
        options.gptq.actOrder = actOrder
        options.gptq.dampPercent = damp
        let start = Date()
        let result = try PTQ.quantize(decoder: decoder, calibration: windows, options: options, log: log)
        if let total = result.totalRelativeOutputError {
            log(String(format: "ptq: sum of relative output errors over %d matrices: %.4f", result.reports.count, total))
        }

        let tokenizerDir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("rqat-tok-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tokenizerDir) }
        try lm.tokenizer.writeHuggingFaceFiles(to: tokenizerDir, chatTemplate: lm.chatTemplate,
                                               modelMaxLength: lm.config.maxPositionEmbeddings)
        var extra: [String: Any] = ["desc_act": actOrder, "damp_percent": damp,
                                    "rqat": ["method": methodName, "clip_search": clip,
                                             "calibration": calibration ?? "", "calibration_windows": windows.count,
                                             "seq_len": seqLen]]
        if let total = result.totalRelativeOutputError { extra["rqat_sum_relative_output_error"] = total }
        if let rotation { extra[RotationSpec.configKey] = rotation.jsonObject }
        let outURL = URL(fileURLWithPath: out)
        try QuantizedCheckpoint.save(directory: outURL, config: decoder.config,
                                     fullPrecision: PTQ.fullPrecisionTensors(decoder.weights).merging(extraTensors) { $1 },
                                     quantized: result.quantized, scheme: scheme, method: methodName,
                                     extra: extra,
                                     extraFiles: ["tokenizer.json", "tokenizer_config.json"].map { tokenizerDir.appendingPathComponent($0) },
                                     activationQuant: transform?.activationQuant(scheme))
        let seconds = Date().timeIntervalSince(start)
        let report = PTQReport(model: model, scheme: scheme.description, method: methodName, clipSearch: clip,
                               actOrder: actOrder, dampPercent: damp, calibration: calibration,
                               calibrationWindows: windows.count, seqLen: seqLen,
                               matrices: result.reports.map { .init(name: $0.name, relativeOutputError: $0.relativeOutputError) },
                               sumRelativeOutputError: result.totalRelativeOutputError, activationOutliers: outliers,
                               rotatedActivationOutliers: rotatedOutliers, flatQuantBlocks: flatQuantReports, seconds: seconds)
        try JobJSON.write(report, to: PTQReport.url(out: outURL))
        log(String(format: "ptq: wrote %@ in %.0f s", out, seconds))
        return report
    }
}
