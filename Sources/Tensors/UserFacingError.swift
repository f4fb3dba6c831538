/// An error about the user's input or environment whose `description` is one line naming the
/// file, rank or option at fault and, where there is one, the fix. The CLI prints it as is and
/// exits non-zero; any other error is a bug and keeps Swift's full report.
package protocol UserFacingError: Error, CustomStringConvertible {}
