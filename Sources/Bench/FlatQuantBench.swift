import Foundation
import Formats
import Jobs
import Model
import Quant

/// `rqat bench flatquant`: FlatQuant's block calibration on the first blocks of a model at given
/// settings, each block's output MSE at the start and after, and the time it took: what the CPU
/// default costs against the published settings, block for block.
package enum FlatQuantBench {
    /// Windows of `settings.length` tokens of `calibration` (text lines or JSONL "text"), the first
    /// `settings.samples` of them, through `settings.blocks` blocks of `model`.
    package static func run(model: String, calibration: String, scheme: QuantScheme, settings: FlatQuant.Settings,
                            log: (String) -> Void) throws -> [FlatQuantBlockRecord] {
        let lm = try LanguageModel(path: model)
        let windows = try CalibrationText.windows(path: calibration, tokenizer: lm.tokenizer, seqLen: settings.length, samples: settings.samples)
            .filter { $0.count == settings.length }
        guard !windows.isEmpty else {
            throw FormatError(calibration, "no window of \(settings.length) tokens; give more text or a smaller --length")
        }
        let (_, reports) = try FlatQuant.calibrate(config: lm.config, source: lm.checkpoint.weights, sequences: windows,
                                                   scheme: scheme, settings: settings, log: log)
        return reports.map { FlatQuantBlockRecord(report: $0, scheme: scheme.description, windows: windows.count, settings: settings) }
    }
}

package struct FlatQuantBlockRecord: BenchRecord, Equatable {
    package static let name = "flatquant_block"
    package var block: Int
    package var scheme: String
    package var windows: Int
    package var length: Int
    package var epochs: Int
    package var steps: Int
    package var mseStart: Double
    package var mseAfter: Double
    package var keptStart: Bool
    package var seconds: Double

    init(report: FlatQuant.BlockReport, scheme: String, windows: Int, settings: FlatQuant.Settings) {
        block = report.layer
        self.scheme = scheme
        self.windows = windows
        length = settings.length
        epochs = settings.epochs
        steps = report.steps
        mseStart = report.mseBefore
        mseAfter = report.mseAfter
        keptStart = report.keptInitial
        seconds = report.seconds
    }

    enum CodingKeys: String, CodingKey {
        case block, scheme, windows, length, epochs, steps, seconds
        case mseStart = "mse_start"
        case mseAfter = "mse_after"
        case keptStart = "kept_start"
    }
}
