package main

import (
	"fmt"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger returns a JSON logger on stderr (yggd collects it) at yggd's
// level name: ERROR, WARN, INFO, DEBUG or TRACE (TRACE logs as debug).
func newLogger(level string) (*zap.Logger, error) {
	var l zapcore.Level
	switch strings.ToUpper(level) {
	case "ERROR":
		l = zap.ErrorLevel
	case "WARN", "WARNING":
		l = zap.WarnLevel
	case "INFO", "":
		l = zap.InfoLevel
	case "DEBUG", "TRACE":
		l = zap.DebugLevel
	default:
		return nil, fmt.Errorf("log level %q: want ERROR, WARN, INFO, DEBUG or TRACE", level)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(l)
	cfg.Sampling = nil
	cfg.EncoderConfig.TimeKey = "time"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.EncoderConfig.EncodeDuration = zapcore.StringDurationEncoder
	log, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("build logger: %w", err)
	}
	return log, nil
}

func zapError(err error) zap.Field { return zap.Error(err) }
