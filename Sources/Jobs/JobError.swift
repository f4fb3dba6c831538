import Foundation
import Formats
import Quant
import Tensors

/// A job's input or outcome that the user has to fix: one line naming the file, option or
/// rank, and what to do about it.
package struct JobError: UserFacingError {
    package let description: String
    package init(_ description: String) { self.description = description }
}

/// "4m05s", "1h02m": for ETAs and run times in progress lines and tables.
package func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s / 60 % 60) : String(format: "%dm%02ds", s / 60, s % 60)
}
